//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// commentPrefix starts the comment of every rule svctrace adds.
const commentPrefix = "svctrace:"

// Rule comment flags: what a session created besides its rules, so whoever
// removes the rules (the session itself, a later session's sweep, or
// `agent --cleanup`) can undo it exactly.
const (
	flagCreatedChain = 'c' // the nft base chain did not exist before
	flagCreatedTable = 't' // the nft table did not exist before
	flagSetLogger    = 'l' // nf_log for this family read NONE and was set
)

// sessionID identifies one agent session on a node. It carries what a later
// agent needs to prove the session dead: the boot it ran in, its pid
// namespace (inode), pid and start time (clock ticks since boot, field 22 of
// /proc/PID/stat, which never repeats for a reused pid), and the time after
// which it cannot be running any more (0: no deadline).
type sessionID struct {
	Boot     string // first 8 hex digits of /proc/sys/kernel/random/boot_id
	PidNS    uint64
	Pid      int
	Start    uint64
	Deadline int64 // unix seconds
}

// String is the form used in rule comments: BOOT.PIDNS.PID.START.DEADLINE.
func (s sessionID) String() string {
	return fmt.Sprintf("%s.%d.%d.%d.%d", s.Boot, s.PidNS, s.Pid, s.Start, s.Deadline)
}

// parseSessionID parses the String form.
func parseSessionID(v string) (sessionID, error) {
	p := strings.Split(v, ".")
	if len(p) != 5 || p[0] == "" {
		return sessionID{}, fmt.Errorf("invalid session id %q: want BOOT.PIDNS.PID.START.DEADLINE", v)
	}
	var s sessionID
	var err error
	s.Boot = p[0]
	var errs []error
	if s.PidNS, err = strconv.ParseUint(p[1], 10, 64); err != nil {
		errs = append(errs, err)
	}
	if s.Pid, err = strconv.Atoi(p[2]); err != nil {
		errs = append(errs, err)
	}
	if s.Start, err = strconv.ParseUint(p[3], 10, 64); err != nil {
		errs = append(errs, err)
	}
	if s.Deadline, err = strconv.ParseInt(p[4], 10, 64); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return sessionID{}, fmt.Errorf("invalid session id %q: %w", v, err)
	}
	return s, nil
}

// Comment returns the rule comment for this session with flags.
func (s sessionID) Comment(flags string) string {
	c := commentPrefix + s.String()
	if flags != "" {
		c += ":" + flags
	}
	return c
}

// parseComment splits a rule comment into session id and flags; ok is false
// for comments svctrace did not write.
func parseComment(c string) (sid, flags string, ok bool) {
	rest, found := strings.CutPrefix(c, commentPrefix)
	if !found || rest == "" {
		return "", "", false
	}
	sid, flags, _ = strings.Cut(rest, ":")
	return sid, flags, true
}

// procInfo reads identity facts from a /proc tree (a seam for tests).
type procInfo struct {
	root string // "/proc"
}

func (p procInfo) bootID() (string, error) {
	b, err := os.ReadFile(p.root + "/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")
	if len(id) < 8 {
		return "", fmt.Errorf("read boot id: unexpected %q", id)
	}
	return id[:8], nil
}

// pidNS returns the inode of a process's pid namespace.
func (p procInfo) pidNS(pid string) (uint64, error) {
	l, err := os.Readlink(p.root + "/" + pid + "/ns/pid")
	if err != nil {
		return 0, err
	}
	// "pid:[4026531836]"
	l = strings.TrimSuffix(strings.TrimPrefix(l, "pid:["), "]")
	return strconv.ParseUint(l, 10, 64)
}

// startTime returns field 22 of /proc/PID/stat (start time in clock ticks
// since boot).
func (p procInfo) startTime(pid string) (uint64, error) {
	b, err := os.ReadFile(p.root + "/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse %s/%s/stat: no command name", p.root, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("parse %s/%s/stat: %d fields", p.root, pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// nsPid returns the pid of a process as seen in its own (innermost) pid
// namespace: the last NSpid of /proc/PID/status.
func (p procInfo) nsPid(pid string) (int, error) {
	b, err := os.ReadFile(p.root + "/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.Atoi(f[len(f)-1])
		}
	}
	return strconv.Atoi(pid)
}

// newSessionID builds the id of the running process.
func newSessionID(p procInfo, deadline time.Time) (sessionID, error) {
	boot, err := p.bootID()
	if err != nil {
		return sessionID{}, err
	}
	ns, err := p.pidNS("self")
	if err != nil {
		return sessionID{}, fmt.Errorf("read own pid namespace: %w", err)
	}
	start, err := p.startTime("self")
	if err != nil {
		return sessionID{}, fmt.Errorf("read own start time: %w", err)
	}
	s := sessionID{Boot: boot, PidNS: ns, Pid: os.Getpid(), Start: start}
	if !deadline.IsZero() {
		s.Deadline = deadline.Unix()
	}
	return s, nil
}

// Liveness of another session.
type liveness int

const (
	sessionDead    liveness = iota // provably not running
	sessionAlive                   // its process is running
	sessionUnknown                 // its pid namespace is not visible from here
)

// deadlineGrace covers cleanup time after a session's deadline: its rules may
// still be there while it removes them.
const deadlineGrace = 2 * time.Minute

// sessionLiveness decides whether the session that wrote a rule still runs.
func sessionLiveness(p procInfo, sid sessionID, now time.Time) liveness {
	if boot, err := p.bootID(); err == nil && boot != sid.Boot {
		return sessionDead // restored from a saved ruleset after a reboot
	}
	if sid.Deadline != 0 && now.After(time.Unix(sid.Deadline, 0).Add(deadlineGrace)) {
		return sessionDead
	}
	if ns, err := p.pidNS("self"); err == nil && ns == sid.PidNS {
		st, err := p.startTime(strconv.Itoa(sid.Pid))
		if err != nil || st != sid.Start {
			return sessionDead
		}
		return sessionAlive
	}
	// Another pid namespace (another agent pod): it is visible only when
	// this agent shares the host's pid namespace (hostPID). Look for any
	// process in that namespace, then for the session's process in it.
	entries, err := os.ReadDir(p.root)
	if err != nil {
		return sessionUnknown
	}
	nsSeen := false
	for _, e := range entries {
		name := e.Name()
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		ns, err := p.pidNS(name)
		if err != nil || ns != sid.PidNS {
			continue
		}
		nsSeen = true
		st, err := p.startTime(name)
		if err != nil || st != sid.Start {
			continue
		}
		if np, err := p.nsPid(name); err == nil && np == sid.Pid {
			return sessionAlive
		}
	}
	if nsSeen || p.inRootPidNS() {
		// From the root pid namespace every process is visible: a
		// namespace with no process left is gone with its session.
		return sessionDead
	}
	return sessionUnknown
}

// inRootPidNS reports whether this process runs in the initial pid
// namespace (hostPID): its NSpid line then has a single entry.
func (p procInfo) inRootPidNS() bool {
	b, err := os.ReadFile(p.root + "/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return len(strings.Fields(v)) == 1
		}
	}
	return false
}
