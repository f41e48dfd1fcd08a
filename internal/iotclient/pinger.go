package iotclient

import (
	"context"
	"net"
	"sync"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/log"
)

// keepAlivePinger is paho's pinger, made afresh for each connection and
// told that the CONNECT and CONNACK just exchanged were traffic. paho's
// own pinger counts from the zero time, so it sends a PINGREQ the moment
// every connection is up, whatever the keep-alive: a round trip the cloud
// answers for nothing, one of the six packets a claim connection sent to
// ask for a certificate. With this the first PINGREQ is due a keep-alive
// interval after CONNACK, as MQTT's keep-alive means.
type keepAlivePinger struct {
	mu    sync.Mutex
	cur   *paho.DefaultPinger
	debug log.Logger
}

func (k *keepAlivePinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	p := paho.NewDefaultPinger()
	k.mu.Lock()
	if k.debug != nil {
		p.SetDebug(k.debug)
	}
	k.cur = p
	k.mu.Unlock()
	p.PacketSent()
	p.PacketReceived()
	return p.Run(ctx, conn, keepAlive)
}

func (k *keepAlivePinger) current() *paho.DefaultPinger {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

func (k *keepAlivePinger) PacketSent() {
	if p := k.current(); p != nil {
		p.PacketSent()
	}
}

func (k *keepAlivePinger) PacketReceived() {
	if p := k.current(); p != nil {
		p.PacketReceived()
	}
}

func (k *keepAlivePinger) PingResp() {
	if p := k.current(); p != nil {
		p.PingResp()
	}
}

func (k *keepAlivePinger) SetDebug(l log.Logger) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.debug = l
	if k.cur != nil {
		k.cur.SetDebug(l)
	}
}
