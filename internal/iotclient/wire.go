package iotclient

import (
	"encoding/json"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// The wire format is encoded here from the AWS IoT developer guide (fleet
// provisioning MQTT API), on purpose independently of the cloud emulator: a
// misspelled field must not hide by being wrong on both sides.

const (
	opCreateCertificateFromCsr = "CreateCertificateFromCsr"
	opCreateKeysAndCertificate = "CreateKeysAndCertificate"
	opRegisterThing            = "RegisterThing"
)

// createCertificateFromCsrTopic is the request topic; responses come on
// <topic>/accepted and <topic>/rejected.
func createCertificateFromCsrTopic(format string) string {
	return "$aws/certificates/create-from-csr/" + format
}

func createKeysAndCertificateTopic(format string) string {
	return "$aws/certificates/create/" + format
}

func registerThingTopic(templateName, format string) string {
	return "$aws/provisioning-templates/" + templateName + "/provision/" + format
}

type createCertificateFromCsrRequest struct {
	CertificateSigningRequest string `json:"certificateSigningRequest" cbor:"certificateSigningRequest"`
}

type createCertificateFromCsrAccepted struct {
	CertificateID             string `json:"certificateId" cbor:"certificateId"`
	CertificatePEM            string `json:"certificatePem" cbor:"certificatePem"`
	CertificateOwnershipToken string `json:"certificateOwnershipToken" cbor:"certificateOwnershipToken"`
}

// createKeysAndCertificateRequest is empty: the docs show no payload, the
// SDKs send {} (and CBOR's empty map), which the service accepts.
type createKeysAndCertificateRequest struct{}

type createKeysAndCertificateAccepted struct {
	CertificateID             string `json:"certificateId" cbor:"certificateId"`
	CertificatePEM            string `json:"certificatePem" cbor:"certificatePem"`
	PrivateKey                string `json:"privateKey" cbor:"privateKey"`
	CertificateOwnershipToken string `json:"certificateOwnershipToken" cbor:"certificateOwnershipToken"`
}

type registerThingRequest struct {
	CertificateOwnershipToken string `json:"certificateOwnershipToken" cbor:"certificateOwnershipToken"`
	// Optional in the API; left out rather than sent as null.
	Parameters map[string]string `json:"parameters,omitempty" cbor:"parameters,omitempty"`
}

type registerThingAccepted struct {
	ThingName           string            `json:"thingName" cbor:"thingName"`
	DeviceConfiguration map[string]string `json:"deviceConfiguration" cbor:"deviceConfiguration"`
}

// rejectedPayload is the same on every rejected topic. StatusCode is a
// pointer so that a payload without one is told apart from a zero.
type rejectedPayload struct {
	StatusCode   *int   `json:"statusCode" cbor:"statusCode"`
	ErrorCode    string `json:"errorCode" cbor:"errorCode"`
	ErrorMessage string `json:"errorMessage" cbor:"errorMessage"`
}

// codec encodes request payloads and decodes answers for one payload format;
// the format name is also the last segment of the request topic.
type codec interface {
	name() string
	marshal(v any) ([]byte, error)
	unmarshal(data []byte, v any) error
}

type jsonCodec struct{}

func (jsonCodec) name() string { return "json" }

func (jsonCodec) marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec) unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// cborCodec speaks CBOR (RFC 8949) with the same keys as JSON, as AWS
// specifies for the cbor topics. Maps are encoded in canonical key order so
// a payload is the same bytes every time.
type cborCodec struct{ enc cbor.EncMode }

func newCBORCodec() cborCodec {
	enc, err := cbor.CanonicalEncOptions().EncMode()
	if err != nil {
		panic(err) // fixed options: cannot fail
	}
	return cborCodec{enc: enc}
}

func (cborCodec) name() string { return "cbor" }

func (c cborCodec) marshal(v any) ([]byte, error) { return c.enc.Marshal(v) }

func (cborCodec) unmarshal(data []byte, v any) error { return cbor.Unmarshal(data, v) }

func codecFor(format string) (codec, error) {
	switch format {
	case "", "json":
		return jsonCodec{}, nil
	case "cbor":
		return newCBORCodec(), nil
	default:
		return nil, fmt.Errorf("iotclient: payload format %q is not supported (supported: json, cbor)", format)
	}
}
