package cloudsim

import (
	mqtt "github.com/mochi-mqtt/server/v2"
)

// responder carries one request's answer back to the device that asked.
// The operation logic (handle, answer) sees only this, so it runs the same
// inside the embedded broker and attached to someone else's broker.
type responder interface {
	// clientID is the requester's MQTT client id; "" when unknown (an
	// attached broker does not say who published).
	clientID() string
	// connection identifies the requesting connection, for the rate
	// limit.
	connection() any
	// respond sends an encoded answer on topic.
	respond(topic string, payload []byte)
	// disconnect closes the requester's connection; false when it cannot.
	disconnect(reason error) bool
}

// mochiResponder answers through the embedded broker, to the requesting
// connection only.
type mochiResponder struct {
	s   *Server
	cl  *mqtt.Client
	p   Principal
	qos byte
}

var _ responder = (*mochiResponder)(nil)

func (r *mochiResponder) clientID() string { return r.cl.ID }
func (r *mochiResponder) connection() any  { return r.cl }

func (r *mochiResponder) respond(topic string, payload []byte) {
	r.s.deliver(r.cl, r.p, topic, payload, r.qos)
}

func (r *mochiResponder) disconnect(reason error) bool {
	r.cl.Stop(reason)
	return true
}
