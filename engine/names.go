package engine

// Names of the built-in states. They are written into journals on devices
// in the field, so they are stable: renaming one breaks resume on every
// device that stopped in it. A name retired from the machine stays in
// Retired, so a journal naming it is recognised rather than taken for
// corruption.
const (
	LoadConfig        = "LoadConfig"
	DeriveParams      = "DeriveParams"
	PrepareKey        = "PrepareKey"
	CreateCertificate = "CreateCertificate"
	RegisterThing     = "RegisterThing"
	Persist           = "Persist"
	Verify            = "Verify"
	Restart           = "Restart"
	// Done and Failed end a run; every machine has them.
	Done   = "Done"
	Failed = "Failed"
)

// Retired lists state names no longer in the built-in machine, with the
// state a journal that stopped in one resumes at. None yet.
var Retired = map[string]string{}
