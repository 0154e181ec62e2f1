// Package pki provides the mutual TLS used between the ironlb
// cloud-controller-manager (CCM), which is the gRPC client, and the node
// speakers, which are gRPC servers on the host network of every node.
//
// # Identities
//
// Peers are authenticated by a spiffe:// URI SAN, not by hostname: the CCM
// presents CCMIdentity (spiffe://ironlb.dev/ccm) and each speaker presents
// NodeIdentity(node) (spiffe://ironlb.dev/node/<node>). Leaf certificates
// carry no DNS names or IP addresses. Each side verifies the chain against
// the CAs it trusts, the extended key usage (server auth for speakers,
// client auth for the CCM) and the identity: the speaker accepts only the
// CCM, and the CCM accepts only the node it dialled (Bundle.ClientTLSConfig;
// another node's certificate fails with ErrWrongNode), so a speaker
// certificate cannot impersonate the CCM, nor one node another.
//
// # Enrollment
//
// Speakers hold no Kubernetes credentials and no shared key. A speaker
// makes its key in memory at start (NodeCredentials) and presents a
// self-signed certificate until the CCM certifies that key. Its pod mounts
// a projected ServiceAccount token for SpeakerAudience, which the
// Kubernetes API does not accept, and sends it in the first report of
// every stream (only a CCM opens streams). When the CCM does not trust the
// certificate it was shown, Bundle.Enroll checks the token with a
// TokenReview (audience, the speakers' ServiceAccount, and the node of the
// pod it is bound to, which must be the node dialled), reads that pod and
// the Node (the pod must exist with the token's UID, be on that node, of
// that ServiceAccount, neither terminating nor finished; the Node must
// exist) and issues a node certificate (NodeCertLifetime) for the key of
// the handshake, naming the pod and the Node by UID (Attestation); the
// CCM then reconnects.
//
// # Renewal and revocation
//
// On an authenticated stream the CCM renews the certificate after two
// thirds of its lifetime, or at once when the CA changed, with the
// speaker's current token (it asks for it with an Attest instruction):
// Bundle.Renew repeats every check of the enrollment, for the same pod. A
// refusal closes the stream, and the CCM no longer takes that certificate
// as proof of the node. Bundle watches the speaker pods and the Nodes: a
// certificate whose pod or Node is gone no longer authenticates
// (Bundle.Check, at every handshake and whenever Revoked fires, which
// closes the open streams of such speakers); the speaker must enroll
// again.
//
// # The CA
//
// The CCM's Bootstrap runs in its own namespace:
//
//   - The CA (ECDSA P-256, self-signed, ten years) lives in the immutable
//     Opaque Secret ironlb-ca under ca.crt and ca.key. It is created if
//     missing; when several CCM replicas start at once, exactly one creation
//     wins and all replicas use that CA. An existing ironlb-ca is never
//     overwritten. If it is corrupt, the bundle is degraded rather than the
//     CCM stopped: Problem says why, a Warning Event InvalidCA names the
//     Secret, ironlb_ca_valid is 0, the CA in use (if any) and the open
//     streams are kept, and Run retries every 30 s and whenever the Secret
//     changes.
//   - The ConfigMap ironlb-ca-bundle holds, under ca.crt, every CA the CCM
//     trusts (current first). Speakers mount it to verify the CCM. The CCM
//     also sends its bundle with each node certificate and whenever its CAs
//     change; a speaker trusts only the CAs in both (its mounted ones alone
//     while the two share none), so the bundle sent can end trust in a CA
//     at once but never add one the speaker does not mount.
//   - The CCM's client certificates (one per trusted CA, CCMCertLifetime)
//     are issued in memory, never stored, and renewed by Run after two
//     thirds of their lifetime; the speaker names the CAs it trusts in its
//     certificate request and the CCM presents one it accepts.
//
// # Rotating the CA
//
// Copy ironlb-ca to ironlb-ca-previous, then delete ironlb-ca. The CCM
// (which watches both) makes a new CA, trusts both, publishes both in
// ironlb-ca-bundle and sends every connected speaker a certificate from the
// new CA with the new bundle on its open stream. Once the kubelet has
// updated the mounted bundle on every node, delete ironlb-ca-previous: the
// CCM sends every connected speaker the bundle without the old CA, and
// the speakers refuse CCM certificates of the old CA from then on and end
// the streams opened with one (NodeCredentials.VerifyCCM, checked again
// whenever TrustGeneration changes); the CCM reconnects its own such
// streams at once with its new-CA certificate, and sends its bundle at the
// start of every stream, so a speaker reached later narrows too. The
// two CAs must have distinct subjects: the CCM picks the client certificate
// to present by the issuer names the speaker lists (NewCA puts its serial
// number in the subject).
//
// # Bringing your own CA
//
// Create the Secret ironlb-ca in the CCM's namespace with ca.crt (PEM
// certificate with CA:TRUE) and ca.key (PEM PKCS#8, SEC 1 or PKCS#1 key)
// before installing ironlb. The CCM only reads it. The CA must be allowed to
// sign leaf certificates (path length constraints permitting) and be valid
// for the lifetime of the certificates it issues; leaf certificates never
// outlive it.
package pki
