package mosquittotest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// A plain broker passes $aws topics between two MQTT 5 clients (what the
// emulator's broker mode relies on), and is gone once its test ends.
func TestStartPlainBroker(t *testing.T) {
	var addr string
	t.Run("broker", func(t *testing.T) {
		b := Start(t, Config{})
		addr = b.Addr()
		if !strings.HasPrefix(b.URL(), "mqtt://127.0.0.1:") {
			t.Errorf("URL %s, want mqtt://127.0.0.1:PORT", b.URL())
		}
		sub := connect(t, addr, "sub")
		got := make(chan *paho.Publish, 1)
		sub.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet
			return true, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$aws/certificates/create/json/+", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		pub := connect(t, addr, "pub")
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "$aws/certificates/create/json/accepted", QoS: 1, Payload: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.Topic != "$aws/certificates/create/json/accepted" {
				t.Errorf("received on %s", m.Topic)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("mosquitto did not pass a $aws topic between clients")
		}
		if !strings.Contains(b.Log(), "New client connected") {
			t.Errorf("mosquitto log does not show the connections:\n%s", b.Log())
		}
	})
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = conn.Close()
		t.Errorf("mosquitto still listening on %s after its test ended", addr)
	}
}

func connect(t *testing.T, addr, id string) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}
