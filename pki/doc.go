// Package pki provides the mutual TLS used between the ironlb
// cloud-controller-manager (CCM), which is the gRPC client, and the node
// speakers, which are gRPC servers on the host network of every node.
//
// # Identities
//
// Peers are authenticated by a spiffe:// URI SAN, not by hostname: the CCM
// presents CCMIdentity (spiffe://ironlb.dev/ccm) and speakers present
// SpeakerIdentity (spiffe://ironlb.dev/speaker). Leaf certificates carry no
// DNS names or IP addresses. Each side verifies the full chain against the
// ironlb CA, the extended key usage (server auth for speakers, client auth
// for the CCM) and the peer's identity, so a speaker certificate cannot be
// used to impersonate the CCM and vice versa.
//
// # Creation
//
// Speakers have no Kubernetes credentials. The CCM creates everything when
// it starts, by calling Bootstrap in its own namespace:
//
//   - The CA (ECDSA P-256, self-signed, valid for ten years) lives in the
//     Opaque Secret ironlb-ca under the keys ca.crt and ca.key. It is created
//     if missing; when several CCM replicas start at once, exactly one
//     creation wins and all replicas use that CA. An existing ironlb-ca
//     Secret is never overwritten: if it is corrupt, Bootstrap fails with an
//     error naming the Secret and the key, and the CCM does not start.
//   - The speaker certificate (ECDSA P-256, one year by default) lives in the
//     kubernetes.io/tls Secret ironlb-speaker-tls under ca.crt, tls.crt and
//     tls.key. The speaker DaemonSet mounts this Secret as a volume (without
//     subPath, otherwise the kubelet never updates it) and passes the
//     directory to ServerTLSConfig.
//   - The CCM's own client certificate is issued in memory and never stored.
//
// # Rotation
//
// Bundle.Run, running in every CCM replica, renews the in-memory CCM
// certificate and re-checks the speaker Secret at least hourly. The speaker
// certificate is reissued when it is missing, unparsable, not issued by the
// current CA, or when less than a third of its lifetime remains; the update
// uses the Secret's resourceVersion, so concurrent replicas do not clobber
// each other. The kubelet then refreshes the mounted files (typically within
// a minute or two) and the speaker picks them up at its next TLS handshake,
// without a restart: ServerTLSConfig re-reads the files at most once per
// second. Since renewal starts with a third of the lifetime left, there is
// ample time for this propagation.
//
// # Rotating the CA
//
// To replace the CA, delete both Secrets (ironlb-ca and ironlb-speaker-tls)
// and restart the CCM pods. The first CCM to start creates a new CA and a new
// speaker certificate; running replicas also adopt the new CA at their next
// resync. Speakers switch once the kubelet has updated their mounted files.
// Until then, connections between the CCM and a speaker still holding the old
// files fail on both sides, so expect a window (up to the kubelet sync period,
// about a minute by default) in which the CCM cannot reach some speakers;
// restarting the speaker pods after the CCM shortens it.
//
// # Bringing your own CA
//
// To use an existing CA, create the Secret ironlb-ca in the CCM's namespace
// with ca.crt (PEM certificate with CA:TRUE) and ca.key (PEM PKCS#8, SEC 1 or
// PKCS#1 key) before installing ironlb. The CCM only reads it and issues the
// speaker and CCM certificates from it. The CA must be allowed to sign leaf
// certificates (path length constraints permitting) and be valid for the
// lifetime of the certificates it issues; leaf certificates never outlive it.
package pki
