package cloudsim

// More rejection codes (the first ones are next to the payload types in
// ops.go). AWS publishes no full list for the fleet provisioning MQTT API;
// these spellings follow AWS IoT's HTTP API exceptions of the same meaning.
const (
	// CodeAccessDenied is refused by a pre-provisioning hook or a policy:
	// AWS IoT's exception for "not allowed" is AccessDeniedException (the
	// field reports a 403 on RegisterThing without its code; this is the
	// spelling AWS uses across its APIs).
	CodeAccessDenied = "AccessDeniedException" // 403
	// CodeThrottling: too many requests on one connection (Options.RateLimit).
	CodeThrottling = "ThrottlingException" // 429
)

// rejectionCode is one row of the emulator's rejection table.
type rejectionCode struct {
	Status int
	Code   string
	When   string
}

// rejectionTable is the one table of every errorCode the emulator answers
// with on .../rejected, and its statusCode. Tests hold the code that
// rejects, and docs/cloud-emulator.md, to it. Injected faults answer with
// whatever status and code they name and are not listed.
var rejectionTable = []rejectionCode{
	{400, CodeInvalidPayload, "payload over 128 KB (131072 bytes); payload not JSON/CBOR, not an object, wrong types; CSR missing, not PEM, bad signature, weak or unsupported key"},
	{400, CodeInvalidCertificateOwnershipToken, "token empty or missing, unknown, expired, or already used with --single-use-tokens"},
	{400, CodeInvalidParameters, "missing template parameter, invalid thing name, mapping key not found, other evaluation failures"},
	{403, CodeAccessDenied, "a pre-provisioning hook refused, failed or timed out; a policy denied"},
	{404, CodeResourceNotFound, "unknown template; template names a policy that does not exist"},
	{409, CodeResourceConflict, "an existing thing differs on a property whose OverrideSettings say FAIL"},
	{429, CodeThrottling, "more requests on one connection than Options.RateLimit allows"},
	{500, CodeInternalFailure, "the emulator could not save its registry or generate a key"},
}

// rejectionStatus returns the table's status for code, 0 when the code is
// not in the table.
func rejectionStatus(code string) int {
	for _, r := range rejectionTable {
		if r.Code == code {
			return r.Status
		}
	}
	return 0
}
