package render

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// stdJSON is how encoding/json writes v as an NDJSON line: the contract
// AppendPacket keeps.
func stdJSON(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// tricky are strings JSON encoders disagree on.
var tricky = []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\rbs\bff\f", "\x00\x01\x1f\x7f", "<a href=x>&amp;</a>",
	"é ü 日本", "\u2028\u2029", "bad \xff\xfe utf8 \xc3", "\U0001F600"}

// fill sets every field of v (a pointer) to a non-zero value, recursively,
// taking strings from tricky: a record with every field there is.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString(tricky[*n%len(tricky)] + "x")
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16, reflect.Uint8:
		v.SetUint(uint64(*n))
	case reflect.Float64:
		v.SetFloat(1 / float64(*n+2))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := 0; i < 2; i++ {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n)
		fill(e, n)
		v.SetMapIndex(k, e)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	}
}

// TestAppendPacketMatchesEncodingJSON: byte for byte what encoding/json
// writes, for every packet of the goldens, a record with every field set
// (a field added to record.Packet, Hop, NAT or Explain and not to
// jsonpacket.go fails here), records with every field zero, and tricky
// strings.
func TestAppendPacketMatchesEncodingJSON(t *testing.T) {
	var ps []record.Packet
	for _, c := range textCases {
		ps = append(ps, packets(t, c)...)
	}
	var full record.Packet
	n := 0
	fill(reflect.ValueOf(&full).Elem(), &n)
	ps = append(ps, full, record.Packet{}, record.Packet{Hops: []record.Hop{}, NAT: []record.NAT{}, Explain: &record.Explain{}})
	for _, s := range tricky {
		ps = append(ps, record.Packet{Type: s, Hops: []record.Hop{{Table: s, Text: s, Share: 1e-7}, {Share: 1e21}, {Share: 0.333333}},
			Explain: &record.Explain{Summary: s, Notes: []string{s}}})
	}
	for b := 0; b < 256; b++ {
		ps = append(ps, record.Packet{Src: string([]byte{'a', byte(b), 'z'})})
		for at := 0; at < 17; at++ { // the byte in each place of 8-byte words
			s := []byte("abcdefghijklmnopq")
			s[at] = byte(b)
			ps = append(ps, record.Packet{Src: string(s)})
		}
	}
	for i := range ps {
		want := stdJSON(t, &ps[i])
		got := string(AppendPacket(nil, &ps[i]))
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("packet %d: AppendPacket differs from encoding/json (-want +got); a new record field needs a line in pkg/render/jsonpacket.go:\n%s", i, diff)
		}
	}
	// Appending keeps what was there.
	if got := string(AppendPacket([]byte("prefix"), &ps[0])); !strings.HasPrefix(got, "prefix{") {
		t.Errorf("AppendPacket dropped what dst held: %.20q", got)
	}
}
