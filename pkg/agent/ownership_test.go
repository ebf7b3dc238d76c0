//go:build linux

package agent

import (
	"bufio"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// TestOwnership decodes real kernel log captures and checks that the node
// that traced them owns every record while another node on the same kernel
// owns none: the test an agent applies when one kernel log serves several
// nodes.
func TestOwnership(t *testing.T) {
	mac := func(s string) [6]byte {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return [6]byte(m)
	}
	// The node of the captures (captures/README.md): address 10.199.0.2,
	// cni0 10.244.0.1 with MAC ee:9d:03:d6:02:96, the client pod
	// 10.244.0.26 (9e:af:c6:2c:d0:6d) behind veth2a452a94 and the endpoint
	// 10.244.0.25 (06:82:ba:ca:77:23) behind veth893ba1f4.
	traced := nodeFacts{
		ifaces:  map[string]bool{"lo": true, "eth0": true, "cni0": true, "veth2a452a94": true, "veth893ba1f4": true},
		macs:    map[[6]byte]bool{mac("ee:9d:03:d6:02:96"): true, mac("02:00:0a:c7:00:02"): true},
		learned: map[[6]byte]bool{mac("9e:af:c6:2c:d0:6d"): true, mac("06:82:ba:ca:77:23"): true, mac("ee:9d:03:d6:02:96"): true},
		addrs:   map[netip.Addr]bool{netip.MustParseAddr("10.199.0.2"): true, netip.MustParseAddr("10.244.0.1"): true, netip.MustParseAddr("127.0.0.1"): true},
	}
	// Another node on the same kernel: same interface names for eth0 and
	// cni0, its own MACs, veths and addresses.
	other := nodeFacts{
		ifaces:  map[string]bool{"lo": true, "eth0": true, "cni0": true, "veth11aa22bb": true},
		macs:    map[[6]byte]bool{mac("aa:bb:cc:00:00:01"): true, mac("02:00:0a:c7:00:03"): true},
		learned: map[[6]byte]bool{mac("aa:bb:cc:00:00:01"): true, mac("5a:00:00:00:00:09"): true},
		addrs:   map[netip.Addr]bool{netip.MustParseAddr("10.199.0.3"): true, netip.MustParseAddr("10.244.1.1"): true, netip.MustParseAddr("127.0.0.1"): true},
	}
	for _, capture := range []string{"pod-to-svc.legacy.kmsg.txt", "node-to-svc.legacy.kmsg.txt"} {
		t.Run(capture, func(t *testing.T) {
			f, err := os.Open(filepath.Join("../../test/testdata/captures", capture))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			dec := trace.NewDecoder(trace.FormatKmsg)
			sc := bufio.NewScanner(f)
			n := 0
			for sc.Scan() {
				var ev trace.Event
				if dec.Decode(sc.Bytes(), &ev) != trace.ResultEvent {
					continue
				}
				n++
				if !traced.owns(&ev) {
					t.Errorf("the tracing node does not own %s", sc.Text())
				}
				if other.owns(&ev) {
					t.Errorf("another node owns %s", sc.Text())
				}
			}
			if n == 0 {
				t.Fatal("no records decoded")
			}
		})
	}
}

func TestParseBrforward(t *testing.T) {
	data := []byte{
		0x9e, 0xaf, 0xc6, 0x2c, 0xd0, 0x6d, 1, 0, 10, 0, 0, 0, 0, 0, 0, 0,
		0xee, 0x9d, 0x03, 0xd6, 0x02, 0x96, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0,
		0xff, // a cut entry is not read
	}
	got := parseBrforward(data)
	want := [][6]byte{{0x9e, 0xaf, 0xc6, 0x2c, 0xd0, 0x6d}, {0xee, 0x9d, 0x03, 0xd6, 0x02, 0x96}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("parseBrforward() = %x, want %x", got, want)
	}
}
