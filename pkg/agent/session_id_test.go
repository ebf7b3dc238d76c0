//go:build linux

package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSessionIDRoundTrip(t *testing.T) {
	s := sessionID{Boot: "3f2a9c1b", PidNS: 4026531836, Pid: 4242, Start: 987654, Deadline: 1763700000}
	got, err := parseSessionID(s.String())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	sid, flags, ok := parseComment(s.Comment("tc"))
	if !ok || sid != s.String() || flags != "tc" {
		t.Errorf("parseComment(%q) = %q, %q, %v", s.Comment("tc"), sid, flags, ok)
	}
	if _, _, ok := parseComment("svctrace-cap"); ok {
		t.Error(`parseComment("svctrace-cap") = ok: a hand-made capture rule is not a session's`)
	}
	for _, bad := range []string{"", "a.b.c", "x.1.2.3.y", "abc.1.2.3"} {
		if _, err := parseSessionID(bad); err == nil {
			t.Errorf("parseSessionID(%q): want an error", bad)
		}
	}
}

// fakeProc builds a /proc tree: boot id, our own process ("self" = pid 100
// in pid namespace 1000, or nested), and other processes.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T, boot string, selfNSpid string) *fakeProc {
	root := t.TempDir()
	p := &fakeProc{t: t, root: root}
	p.write("sys/kernel/random/boot_id", boot+"-0000-0000-0000-000000000000\n")
	p.process("self", 1000, 500, selfNSpid)
	return p
}

func (p *fakeProc) write(rel, data string) {
	full := filepath.Join(p.root, rel)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *fakeProc) process(pid string, ns uint64, start uint64, nspid string) {
	dir := filepath.Join(p.root, pid)
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Symlink(fmt.Sprintf("pid:[%d]", ns), filepath.Join(dir, "ns", "pid")); err != nil {
		p.t.Fatal(err)
	}
	// Field 2 with spaces and parentheses, as a hostile comm can be.
	fields := make([]string, 50)
	for i := range fields {
		fields[i] = "0"
	}
	fields[18] = fmt.Sprint(start) // field 22 (the 19th after the state)
	p.write(pid+"/stat", pid+" (we (ird) name) S "+strings.Join(fields[:len(fields)-1], " ")+"\n")
	p.write(pid+"/status", "Name:\tx\nNSpid:\t"+nspid+"\n")
}

func TestSessionLiveness(t *testing.T) {
	now := time.Unix(1763700000, 0)
	boot := "3f2a9c1b"
	tests := []struct {
		name   string
		selfNS string // NSpid of self: one entry = root pid namespace
		setup  func(p *fakeProc)
		sid    sessionID
		want   liveness
	}{
		{
			name: "same namespace, running",
			setup: func(p *fakeProc) {
				p.process("200", 1000, 777, "200")
			},
			sid:  sessionID{Boot: boot, PidNS: 1000, Pid: 200, Start: 777},
			want: sessionAlive,
		},
		{
			name: "same namespace, pid reused by another process",
			setup: func(p *fakeProc) {
				p.process("200", 1000, 999, "200")
			},
			sid:  sessionID{Boot: boot, PidNS: 1000, Pid: 200, Start: 777},
			want: sessionDead,
		},
		{
			name: "same namespace, gone",
			sid:  sessionID{Boot: boot, PidNS: 1000, Pid: 200, Start: 777},
			want: sessionDead,
		},
		{
			name: "other boot",
			setup: func(p *fakeProc) {
				p.process("200", 1000, 777, "200")
			},
			sid:  sessionID{Boot: "deadbeef", PidNS: 1000, Pid: 200, Start: 777},
			want: sessionDead,
		},
		{
			name: "deadline long past",
			setup: func(p *fakeProc) {
				p.process("200", 1000, 777, "200")
			},
			sid:  sessionID{Boot: boot, PidNS: 1000, Pid: 200, Start: 777, Deadline: now.Add(-time.Hour).Unix()},
			want: sessionDead,
		},
		{
			name: "deadline within grace: still checked",
			setup: func(p *fakeProc) {
				p.process("200", 1000, 777, "200")
			},
			sid:  sessionID{Boot: boot, PidNS: 1000, Pid: 200, Start: 777, Deadline: now.Add(-time.Minute).Unix()},
			want: sessionAlive,
		},
		{
			name: "other pod visible (hostPID), running",
			setup: func(p *fakeProc) {
				p.process("3000", 2000, 777, "3000\t1")
			},
			sid:  sessionID{Boot: boot, PidNS: 2000, Pid: 1, Start: 777},
			want: sessionAlive,
		},
		{
			name: "other pod visible, its agent gone but the pod's pause process left",
			setup: func(p *fakeProc) {
				p.process("3000", 2000, 100, "3000\t1")
			},
			sid:  sessionID{Boot: boot, PidNS: 2000, Pid: 7, Start: 777},
			want: sessionDead,
		},
		{
			name:   "other pod not visible, we are in the root pid namespace: gone",
			selfNS: "500",
			sid:    sessionID{Boot: boot, PidNS: 2000, Pid: 7, Start: 777},
			want:   sessionDead,
		},
		{
			name:   "other pod not visible from a nested pid namespace: unknown",
			selfNS: "500\t3",
			sid:    sessionID{Boot: boot, PidNS: 2000, Pid: 7, Start: 777},
			want:   sessionUnknown,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			selfNS := tt.selfNS
			if selfNS == "" {
				selfNS = "500\t3"
			}
			p := newFakeProc(t, boot, selfNS)
			if tt.setup != nil {
				tt.setup(p)
			}
			if got := sessionLiveness(procInfo{root: p.root}, tt.sid, now); got != tt.want {
				t.Errorf("sessionLiveness = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewSessionIDReal(t *testing.T) {
	deadline := time.Now().Add(time.Hour).Truncate(time.Second)
	s, err := newSessionID(procInfo{root: "/proc"}, deadline)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pid != os.Getpid() || s.Deadline != deadline.Unix() || len(s.Boot) != 8 || s.PidNS == 0 || s.Start == 0 {
		t.Errorf("newSessionID = %+v: want our pid, the deadline, an 8-digit boot id, a pid namespace and a start time", s)
	}
	if got := sessionLiveness(procInfo{root: "/proc"}, s, time.Now()); got != sessionAlive {
		t.Errorf("our own session: liveness %v, want alive", got)
	}
	dead := s
	dead.Start++
	if got := sessionLiveness(procInfo{root: "/proc"}, dead, time.Now()); got != sessionDead {
		t.Errorf("a session with our pid but another start time: liveness %v, want dead", got)
	}
}
