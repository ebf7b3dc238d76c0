package trace_test

import (
	"fmt"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

func ExampleReadAll() {
	// Two packets' records, interleaved, as /dev/kmsg shows them.
	input := strings.Join([]string{
		"4,100,1000,-;TRACE: raw:OUTPUT:policy:2 IN= OUT=eth0 SRC=10.0.0.1 DST=10.96.0.10 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=11 DF PROTO=TCP SPT=40000 DPT=80 SEQ=1 ACK=0 WINDOW=1 RES=0x00 SYN URGP=0 ",
		"4,101,1001,-;TRACE: raw:OUTPUT:policy:2 IN= OUT=eth0 SRC=10.0.0.1 DST=10.96.0.20 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=12 DF PROTO=TCP SPT=40001 DPT=443 SEQ=9 ACK=0 WINDOW=1 RES=0x00 SYN URGP=0 ",
		"4,102,1002,-;TRACE: nat:OUTPUT:rule:1 IN= OUT=eth0 SRC=10.0.0.1 DST=10.96.0.10 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=11 DF PROTO=TCP SPT=40000 DPT=80 SEQ=1 ACK=0 WINDOW=1 RES=0x00 SYN URGP=0 ",
		"4,103,1003,-;TRACE: filter:OUTPUT:policy:1 IN= OUT=eth0 SRC=10.0.0.1 DST=10.244.0.7 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=11 DF PROTO=TCP SPT=40000 DPT=8080 SEQ=1 ACK=0 WINDOW=1 RES=0x00 SYN URGP=0 ",
		"4,104,1004,-;TRACE: nat:POSTROUTING:policy:1 IN= OUT=eth0 SRC=10.0.0.1 DST=10.244.0.7 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=11 DF PROTO=TCP SPT=40000 DPT=8080 SEQ=1 ACK=0 WINDOW=1 RES=0x00 SYN URGP=0 ",
	}, "\n")
	st, err := trace.ReadAll(strings.NewReader(input), trace.FormatAuto, trace.GroupOptions{
		Emit: func(p *trace.Packet) {
			fmt.Printf("packet ID=%d %v -> %v:%d\n", p.First.IPID, p.First.Src, p.First.Dst, p.First.DPort)
			for _, h := range p.Hops {
				fmt.Printf("  %s:%s:%s:%d  dst %v:%d\n", h.Table, h.Chain, h.Kind, h.Rule, h.Header.Dst, h.Header.DPort)
			}
		},
	})
	if err != nil {
		fmt.Println(err)
	}
	fmt.Printf("%d records, %d packets, %d complete\n", st.Records, st.Packets, st.Complete)
	// Output:
	// packet ID=11 10.0.0.1 -> 10.96.0.10:80
	//   raw:OUTPUT:policy:2  dst 10.96.0.10:80
	//   nat:OUTPUT:rule:1  dst 10.96.0.10:80
	//   filter:OUTPUT:policy:1  dst 10.244.0.7:8080
	//   nat:POSTROUTING:policy:1  dst 10.244.0.7:8080
	// packet ID=12 10.0.0.1 -> 10.96.0.20:443
	//   raw:OUTPUT:policy:2  dst 10.96.0.20:443
	// 5 records, 2 packets, 1 complete
}
