package iotclient

import (
	"encoding/json"
	"fmt"
)

// The wire format is encoded here from the AWS IoT developer guide (fleet
// provisioning MQTT API), on purpose independently of the cloud emulator: a
// misspelled field must not hide by being wrong on both sides.

const (
	opCreateCertificateFromCsr = "CreateCertificateFromCsr"
	opRegisterThing            = "RegisterThing"
)

// createCertificateFromCsrTopic is the request topic; responses come on
// <topic>/accepted and <topic>/rejected.
func createCertificateFromCsrTopic(format string) string {
	return "$aws/certificates/create-from-csr/" + format
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
// the format name is also the last segment of the request topic. A CBOR
// codec (same keys as JSON, per AWS) slots in here.
type codec interface {
	name() string
	marshal(v any) ([]byte, error)
	unmarshal(data []byte, v any) error
}

type jsonCodec struct{}

func (jsonCodec) name() string { return "json" }

func (jsonCodec) marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec) unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func codecFor(format string) (codec, error) {
	switch format {
	case "", "json":
		return jsonCodec{}, nil
	default:
		return nil, fmt.Errorf("iotclient: payload format %q is not supported (supported: json)", format)
	}
}
