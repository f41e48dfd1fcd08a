package cloudsim

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// cborCodec speaks the `cbor` topics. AWS uses the same keys as in JSON, so
// the payload structs' json tags name the CBOR map keys too (fxamacker/cbor
// falls back to json tags).
type cborCodec struct{}

// cborDec is strict where a lenient decoder would hide a device bug: map
// keys match case-sensitively (JSON's case folding is an encoding/json
// habit, not an AWS one), a key may not appear twice, a byte string is not
// accepted where AWS wants text, and trailing bytes after the map are an
// error. Unknown keys are ignored, as the JSON side ignores them.
var cborDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:          cbor.DupMapKeyEnforcedAPF,
		FieldNameMatching:  cbor.FieldNameMatchingCaseSensitive,
		ByteStringToString: cbor.ByteStringToStringForbidden,
		MaxNestedLevels:    16,
	}.DecMode()
	if err != nil {
		panic(err) // the options are constants; this cannot fail at run time
	}
	return dm
}()

func (cborCodec) decode(b []byte, v any) error {
	if len(b) == 0 {
		return errors.New("empty CBOR payload")
	}
	return cborDec.Unmarshal(b, v)
}

func (cborCodec) encode(v any) ([]byte, error) { return cbor.Marshal(v) }

// decodeEmptyRequest checks a CreateKeysAndCertificate request, which has
// no fields: the docs show an empty payload, the SDKs send `{}` (CBOR `a0`).
// Anything that is not a map is refused, so a device that sent the wrong
// request to this topic hears about it instead of getting a key it did not
// ask for.
func decodeEmptyRequest(c codec, payload []byte) error {
	if len(payload) == 0 {
		return nil
	}
	if _, isJSON := c.(jsonCodec); isJSON && len(bytes.TrimSpace(payload)) == 0 {
		return nil
	}
	var m map[string]any
	if err := c.decode(payload, &m); err != nil {
		return err
	}
	if m == nil { // JSON null, CBOR null or undefined
		return fmt.Errorf("payload is null, want an empty object")
	}
	return nil
}

var (
	_ codec = cborCodec{}
	_ codec = jsonCodec{}
)
