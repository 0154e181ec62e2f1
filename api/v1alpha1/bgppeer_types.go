package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGPPeer is a router that the speakers of the selected nodes open a BGP
// session with, to advertise the VIPs of pools announced over BGP.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpp,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="Peer ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="My ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="Sessions",type=string,JSONPath=`.status.summary`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPPeerSpec   `json:"spec"`
	Status BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerSpec says how the speakers reach a router.
//
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.keepaliveTime) < duration(self.holdTime)",message="keepaliveTime must be shorter than holdTime"
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.holdTime) != duration('0s') || duration(self.keepaliveTime) == duration('0s')",message="keepaliveTime must be 0s when holdTime is 0s (no keepalives)"
// +kubebuilder:validation:XValidation:rule="!has(self.sourceAddress) || !isIP(self.sourceAddress) || !isIP(self.peerAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",message="sourceAddress must be of the same IP family as peerAddress"
// +kubebuilder:validation:XValidation:rule="!has(self.ebgpMultihop) || self.myASN != self.peerASN",message="ebgpMultihop applies to eBGP sessions only (myASN and peerASN are equal)"
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || !has(self.nodeSelector.matchExpressions) || self.nodeSelector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="nodeSelector.matchExpressions: operator must be one of In, NotIn, Exists, DoesNotExist"
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || !has(self.nodeSelector.matchExpressions) || self.nodeSelector.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="nodeSelector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
type BGPPeerSpec struct {
	// PeerAddress is the router's address, IPv4 or IPv6.
	//
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip.isCanonical(self)",message="peerAddress must be an IP address in canonical form, such as 192.0.2.1 or 2001:db8::1"
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).isGlobalUnicast()",message="peerAddress must be a unicast address (not unspecified, loopback, link-local, multicast or broadcast)"
	PeerAddress string `json:"peerAddress"`

	// PeerASN is the router's autonomous system number.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	PeerASN int64 `json:"peerASN"`

	// MyASN is the speakers' autonomous system number: equal to PeerASN
	// for iBGP, different for eBGP.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	MyASN int64 `json:"myASN"`

	// PeerPort is the router's BGP port.
	//
	// +kubebuilder:default=179
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	PeerPort int32 `json:"peerPort,omitempty"`

	// SourceAddress is the local address the speakers open the session
	// from. Empty lets the kernel choose by route to the peer.
	//
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip.isCanonical(self)",message="sourceAddress must be an IP address in canonical form"
	// +optional
	SourceAddress string `json:"sourceAddress,omitempty"`

	// RouterID is the BGP identifier the speakers use with this peer.
	// Empty means each node's IPv4 InternalIP; IPv6-only nodes need it.
	//
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4 && ip.isCanonical(self) && !ip(self).isUnspecified()",message="routerID must be an IPv4 address other than 0.0.0.0"
	// +optional
	RouterID string `json:"routerID,omitempty"`

	// HoldTime is how long a session may stay silent before it is torn
	// down: 0s (never) or at least 3s.
	//
	// +kubebuilder:default="90s"
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s'))",message="holdTime must be 0s or between 3s and 65535s"
	// +optional
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// KeepaliveTime is the interval between keepalives. Empty means a
	// third of HoldTime.
	//
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('21845s')",message="keepaliveTime must be between 0s and 21845s"
	// +optional
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// ConnectRetryTime is how long a speaker waits between attempts to
	// open the session.
	//
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="connectRetryTime must be between 1s and 1h"
	// +optional
	ConnectRetryTime *metav1.Duration `json:"connectRetryTime,omitempty"`

	// EBGPMultihop is the TTL of the session's packets, for an eBGP peer
	// that is not directly connected. Absent means directly connected.
	//
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	// +optional
	EBGPMultihop *int32 `json:"ebgpMultihop,omitempty"`

	// PasswordSecretRef names the Secret, in IronLB's namespace, that
	// holds the session's TCP MD5 password. The Secret must be of type
	// ironlb.dev/bgp-password (kubectl create secret generic NAME
	// --type=ironlb.dev/bgp-password --from-literal=password=...), and the
	// key's value 1 to 80 printable ASCII characters with no space at
	// either end. IronLB's own Secrets (ironlb-ca, ironlb-ca-previous,
	// ironlb-speaker-tls, ironlb-metrics-reader) are never used, whatever
	// their type. A Secret that is missing, of another type, one of
	// IronLB's own, without the key or with a value that cannot be a
	// password all make the peer unusable with the same condition reason
	// PasswordSecretNotUsable and message, so that the message tells
	// nothing about which Secrets exist; the CCM's log says which it was.
	//
	// +kubebuilder:validation:XValidation:rule="!(self.name in ['ironlb-ca', 'ironlb-ca-previous', 'ironlb-speaker-tls', 'ironlb-metrics-reader'])",message="passwordSecretRef.name must not name one of IronLB's own Secrets"
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`

	// NodeSelector limits the nodes whose speakers open a session with
	// this peer. Empty means every node.
	//
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// BFD runs Bidirectional Forwarding Detection with the router, so
	// that a node that is lost silently leaves the router's ECMP set
	// within the detection time (receiveInterval × detectMultiplier with
	// the defaults) rather than the hold time. The router must run BFD
	// for the node too (FRR: "neighbor X bfd"). Single hop (RFC 5881:
	// the router must be directly connected, also for iBGP), or multihop
	// (RFC 5883) when ebgpMultihop is set.
	//
	// +optional
	BFD *BGPPeerBFD `json:"bfd,omitempty"`

	// GracefulRestart asks the router to keep a node's routes while its
	// speaker restarts (RFC 4724): a speaker upgrade then loses no
	// connection. Use it with BFD, or a node that is really gone keeps
	// its routes for holdTime + restartTime.
	//
	// +optional
	GracefulRestart *BGPPeerGracefulRestart `json:"gracefulRestart,omitempty"`
}

// BGPPeerBFD is the BFD session of each selected node with the peer.
type BGPPeerBFD struct {
	// Enabled turns BFD on for this peer.
	Enabled bool `json:"enabled"`

	// ReceiveInterval is the shortest interval between the router's BFD
	// packets that the speakers accept (Required Min RX Interval).
	//
	// +kubebuilder:default="300ms"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="receiveInterval must be between 10ms and 60s"
	// +optional
	ReceiveInterval *metav1.Duration `json:"receiveInterval,omitempty"`

	// TransmitInterval is the interval at which the speakers would like
	// to send (Desired Min TX Interval); the router may ask for slower.
	//
	// +kubebuilder:default="300ms"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="transmitInterval must be between 10ms and 60s"
	// +optional
	TransmitInterval *metav1.Duration `json:"transmitInterval,omitempty"`

	// DetectMultiplier is how many packets in a row the router may miss
	// before it declares the node down.
	//
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	// +optional
	DetectMultiplier *int32 `json:"detectMultiplier,omitempty"`
}

// BGPPeerGracefulRestart is the graceful restart capability the speakers
// advertise to the peer.
type BGPPeerGracefulRestart struct {
	// Enabled advertises graceful restart (RFC 4724): the router keeps a
	// node's routes, marked stale, for up to restartTime after its
	// session drops without a NOTIFICATION (a speaker that is restarted
	// or crashed), until the new speaker has re-advertised them.
	Enabled bool `json:"enabled"`

	// RestartTime is how long the router keeps the routes of a
	// restarting speaker.
	//
	// +kubebuilder:default="120s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('4095s')",message="restartTime must be between 1s and 4095s"
	// +optional
	RestartTime *metav1.Duration `json:"restartTime,omitempty"`
}

// SecretKeyRef names one key of a Secret in IronLB's namespace.
type SecretKeyRef struct {
	// Name is the Secret's name.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key is the key in the Secret's data.
	//
	// +kubebuilder:default=password
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +optional
	Key string `json:"key,omitempty"`
}

// BGPPeerStatus is what the speakers report of their sessions with the
// peer.
type BGPPeerStatus struct {
	// ObservedGeneration is the generation the status describes.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Summary reads "Established n/m": n of the m selected nodes have the
	// session up.
	//
	// +optional
	Summary string `json:"summary,omitempty"`

	// Sessions has one entry per selected node.
	//
	// +listType=map
	// +listMapKey=node
	// +optional
	Sessions []BGPSession `json:"sessions,omitempty"`

	// Conditions: Ready (the spec and its Secret are usable).
	//
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BGPSession is the state of one node's session with the peer.
type BGPSession struct {
	// Node is the node's name.
	Node string `json:"node"`

	// State is the BGP finite-state-machine state: Idle, Connect, Active,
	// OpenSent, OpenConfirm or Established; Unknown while the node's
	// speaker has not reported.
	State string `json:"state"`

	// Since is when the session entered State.
	//
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// LastError is why the session last went down or failed to come up,
	// such as a wrong password, a refused connection, an expired hold
	// timer or no route to the peer.
	//
	// +optional
	LastError string `json:"lastError,omitempty"`

	// AdvertisedRoutes counts the routes the speaker advertises on the
	// session.
	//
	// +optional
	AdvertisedRoutes int32 `json:"advertisedRoutes"`

	// BFD is the state of the node's BFD session with the peer; absent
	// when BFD is off.
	//
	// +optional
	BFD *BFDSession `json:"bfd,omitempty"`
}

// BFDSession is the state of one node's BFD session with the peer.
type BFDSession struct {
	// State is Up, Down, Init or AdminDown.
	State string `json:"state"`

	// Since is when the session entered State.
	//
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// Reason says why the session is not Up: no BFD packet from the
	// router yet (it may not run BFD for this node), the detection time
	// expired, or the router turned it off.
	//
	// +optional
	Reason string `json:"reason,omitempty"`

	// TransmitInterval is the negotiated interval between the speaker's
	// packets.
	//
	// +optional
	TransmitInterval *metav1.Duration `json:"transmitInterval,omitempty"`

	// DetectTime is how long the speaker waits for the router's packets
	// before it declares the session down.
	//
	// +optional
	DetectTime *metav1.Duration `json:"detectTime,omitempty"`

	// Flaps counts the times the session went from Up to Down since the
	// speaker started.
	//
	// +optional
	Flaps int64 `json:"flaps,omitempty"`
}

// BGP session states, as BGPSession.State reports them.
const (
	SessionIdle        = "Idle"
	SessionConnect     = "Connect"
	SessionActive      = "Active"
	SessionOpenSent    = "OpenSent"
	SessionOpenConfirm = "OpenConfirm"
	SessionEstablished = "Established"
	SessionUnknown     = "Unknown"
)

// BFD session states, as BFDSession.State reports them.
const (
	BFDUp        = "Up"
	BFDDown      = "Down"
	BFDInit      = "Init"
	BFDAdminDown = "AdminDown"
)

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}
