package kube

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/join"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// Sink receives a live trace's records as they arrive; render.Text and
// render.JSON are Sinks.
type Sink interface {
	Packet(*record.Packet) error
	Lost(*record.Lost) error
	Warning(*record.Warning) error
	Summary(*record.Summary) error
}

// Tracer runs live trace sessions: one agent pod per node.
type Tracer struct {
	Client kubernetes.Interface
	IO     PodIO
	// Out receives the records (stdout).
	Out Sink
	// ErrOut receives progress and the plugin's own messages (stderr).
	ErrOut io.Writer
	// Quiet silences ErrOut except for warnings that change the result.
	Quiet bool
	// Terminal says ErrOut is a terminal: progress is a live status line.
	Terminal bool
	// Summarizer, when set, counts the packets, and its summary is written
	// to Out at the end (explain.NewSummarizer fits).
	Summarizer Summarizer
	// SummaryOnly writes only the summary to Out: packets and lost records
	// are counted but not written, warnings go to ErrOut.
	SummaryOnly bool
	// Policies, when set, adds the cluster's NetworkPolicies to packets'
	// policy checks (NewPolicies).
	Policies *Policies
}

// Summarizer aggregates a session's packets into a summary record.
type Summarizer interface {
	SetEndpoints(service string, endpoints []string, pods map[string]string)
	Add(*record.Packet)
	AddLost(uint64)
	Summary() record.Summary
}

// TraceConfig is one trace session.
type TraceConfig struct {
	Target *Target
	Nodes  []string
	// Namespace is where the agent pods run.
	Namespace string
	Image     string
	Agent     AgentOptions
	// Count stops the session after that many packets (0: until the
	// agents' duration ends or the context is canceled).
	Count int
	// StartTimeout bounds the time from creating the pods to every agent
	// being ready (image pull included).
	StartTimeout time.Duration
	// From is the pod the agent's test connection comes from (--from; its
	// IP is in Agent.ProbeFromIP), nil for none.
	From *FromPod
	// Roles says what each node plays (NodeChoice.Roles); endpoint nodes'
	// agents also trace the packets arriving for their endpoints.
	Roles []NodeRole
	// AgentLog prints the agents' log lines (what is not a record) on
	// stderr as they come.
	AgentLog bool
	// WaitPods makes Run wait until every agent pod is gone. Without it Run
	// waits only for the pods of agents that did not confirm, in their bye
	// record, that they removed their rules.
	WaitPods bool
}

// Timing values; variables so tests can shorten them.
var (
	// stopGrace is how long agents get to clean up and say bye after their
	// stdin closes, before their pods are deleted anyway.
	stopGrace = 10 * time.Second
	// finishGrace is how long after its duration an agent may take to end.
	finishGrace = 15 * time.Second
	// deleteTimeout bounds waiting for the pods to be gone.
	deleteTimeout = 30 * time.Second
	// pollInterval is how often `svctrace cleanup` checks deletion (a
	// session waits on its watch instead).
	pollInterval = 250 * time.Millisecond
	// holdWait bounds how long a ready agent's answer on its stdin is
	// waited for before the session goes on without that guarantee.
	holdWait = 10 * time.Second
	// deadlineMargin is added to the pods' activeDeadlineSeconds beyond
	// start timeout + duration, so the last-resort deadline never cuts a
	// healthy session short.
	deadlineMargin = 60 * time.Second
)

// agent is the client side of one agent pod.
type agent struct {
	node  string
	pod   string
	roles NodeRole
	stdin *io.PipeWriter
	// probeWhenTold: its probe waits for record.WordProbe on its stdin.
	probeWhenTold bool
	created       bool // its pod exists (creation succeeded)
	started       bool // the container started: its output is being read
	ready         *record.Ready
	readyAt       time.Time
	// held: the agent answered the first line on its stdin, so it stops
	// when this process dies. unheld: that will not be (the attach failed,
	// or no answer came within holdWait), and the user was warned.
	held, unheld bool
	bye          *record.Bye
	ended        bool
	gone         bool  // the watch saw its pod deleted
	failed       error // it cannot take part (any more); the others go on
	tail         []string
	packets      int
	lastState    string
}

func (a *agent) keep(line string) {
	const max = 8
	if len(a.tail) == max {
		copy(a.tail, a.tail[1:])
		a.tail = a.tail[:max-1]
	}
	a.tail = append(a.tail, line)
}

// lastLines is "; its last output: ..." (its last lines that were no
// records), or "".
func (a *agent) lastLines() string {
	if len(a.tail) == 0 {
		return ""
	}
	return "; its last output: " + strings.Join(a.tail, " | ")
}

// cleanedUp reports whether the agent said in its bye that it ended
// cleanly: its rules removed, its loggers restored.
func (a *agent) cleanedUp() bool { return a.bye != nil && a.bye.Error == "" }

// state is the agent's start-up as the progress line tells it.
func (a *agent) state() string {
	switch {
	case !a.live():
		return "failed"
	case a.ready != nil && (a.held || a.unheld):
		return "ready"
	case a.ready != nil:
		return "ready, attaching to its stdin"
	}
	return orText(a.lastState, "creating")
}

// live reports whether the agent still takes part in the session.
func (a *agent) live() bool { return a.failed == nil }

// event is what the per-agent goroutines tell the session loop.
type event struct {
	agent *agent
	kind  eventKind
	rec   any    // evRecord
	line  string // evLog
	// garbled: line is why a record could not be decoded (evLog).
	garbled bool
	err     error // evEnd, evAttachFailed
}

type eventKind int

const (
	evRecord       eventKind = iota // a record from the agent
	evLog                           // a line that is not a record
	evEnd                           // the output stream ended
	evAttachFailed                  // holding the agent's stdin failed
)

// joinTick is how often legs waiting for their other half are checked.
var joinTick = 100 * time.Millisecond

// Run traces cfg.Target on cfg.Nodes until the agents finish, cfg.Count
// packets were seen, or ctx is canceled (Ctrl-C: not an error). On every
// path the agent pods' deletion is accepted before Run returns, and no
// TRACE rule is left: it waits for the pods of agents that did not confirm
// their cleanup, and for every pod with cfg.WaitPods (deletePods).
//
// One watch on the session's label follows every agent pod; each started
// agent has one log stream and one attach: the API requests a session
// makes do not grow with time, and per node only by those two streams and
// the pod's create and delete. An agent that cannot start, or is lost
// mid-session, is reported (node and fix) and the others go on; the
// command fails only when no agent is left, and says at the end which ones
// failed.
func (tr *Tracer) Run(ctx context.Context, cfg TraceConfig) (err error) {
	start := time.Now()
	t := cfg.Target
	session := newSessionID()
	st := &status{w: tr.ErrOut, on: tr.Terminal && !tr.Quiet}

	// The watch and the streams get their own context: after Ctrl-C the
	// agents still send their last packets and bye records, which are
	// worth reading, and deletion is waited for on the watch.
	watchCtx, cancelWatch := context.WithCancel(context.Background())
	defer cancelWatch()
	podEvents := make(chan podEvent, 64)

	s := &loop{tr: tr, cfg: cfg, st: st, start: start, podEvents: podEvents, events: make(chan event, 64)}
	s.streamCtx, s.cancelStreams = context.WithCancel(context.Background())
	defer func() {
		st.clear()
		s.stopStreams()
		if derr := tr.deletePods(cfg.Namespace, s.agents, podEvents, cfg.WaitPods); derr != nil {
			err = errors.Join(err, derr)
		}
	}()

	roles := map[string]NodeRole{}
	for _, r := range cfg.Roles {
		roles[r.Node] = r
	}
	choice := NodeChoice{Roles: cfg.Roles}
	deadline := s.podDeadline()
	var createErrs []error
	for _, node := range cfg.Nodes {
		opts := cfg.Agent
		opts.TraceEndpoints = slices.Contains(roles[node].Roles, RoleEndpoint)
		if !choice.Probes(node) {
			// Only the client's node sends the test connection; the
			// nodes it is followed to trace what arrives from it.
			opts.Probe, opts.Src, opts.ProbeFromIP = false, opts.ProbeFromIP, ""
		}
		// The probe waits for every agent (a packet sent before the nodes
		// it is followed to trace is half a story) and for the agent pods
		// to be Running in the API: CNIs such as kube-router resync their
		// chains on that, and the agent probes once its ruleset settled.
		opts.ProbeWhenTold = opts.Probe || opts.ProbeFromIP != ""
		pod := AgentPod(PodOptions{
			Namespace:      cfg.Namespace,
			Node:           node,
			Session:        session,
			Image:          cfg.Image,
			Purpose:        PurposeTrace,
			Args:           AgentArgs(t, node, opts),
			Target:         t.DisplayName(),
			ActiveDeadline: deadline,
			Stdin:          true,
		})
		a := &agent{node: node, pod: pod.Name, roles: roles[node], probeWhenTold: opts.ProbeWhenTold}
		s.agents = append(s.agents, a)
		if _, err := tr.Client.CoreV1().Pods(cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			a.failed = createError(err, cfg.Namespace, node)
			createErrs = append(createErrs, a.failed)
			continue
		}
		a.created = true
	}
	if len(createErrs) == len(s.agents) {
		return errors.Join(uniqueErrors(createErrs)...)
	}
	// Listed once the pods exist, then watched from that list on.
	go watchPods(watchCtx, tr.Client, cfg.Namespace, LabelSession+"="+session, podEvents)
	for _, a := range s.agents {
		if a.failed != nil {
			s.errs = append(s.errs, a.failed)
			s.warn(fmt.Sprintf("no agent on node %s, going on with the other nodes: %v", a.node, a.failed))
		}
	}

	if tr.Summarizer != nil {
		for name, eps := range t.EndpointsByService {
			pods := map[string]string{}
			for _, ep := range eps {
				pods[ep] = t.PodByIP[record.Host(ep)]
			}
			tr.Summarizer.SetEndpoints(name, eps, pods)
		}
		if n, ok := tr.Summarizer.(interface{ SetNodes(map[string]string) }); ok {
			n.SetNodes(t.EndpointNodeByIP())
		}
	}
	s.joiner = join.New(join.Options{
		NodeOf: t.NodeOf,
		Traced: func(node string) bool {
			for _, a := range s.agents {
				if a.node == node && a.live() {
					return true
				}
			}
			return false
		},
	})
	s.cluster = explain.Cluster{NodeByIP: t.NodeByIP, EndpointNodes: t.EndpointNodes(), ExternalLocal: t.ExternalLocal, ClusterIPs: t.ClusterIPs}
	if len(cfg.Nodes) == 1 {
		st.set(fmt.Sprintf("Waiting for agent pod %s/%s on node %s: creating", cfg.Namespace, s.agents[0].pod, s.agents[0].node))
	} else {
		st.set(fmt.Sprintf("Waiting for %d agent pods in namespace %s: creating", len(s.agents), cfg.Namespace))
	}
	return s.run(ctx)
}

// uniqueErrors drops repeated messages (the same admission error per node).
func uniqueErrors(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	return out
}

// loop is the session's single-threaded state.
type loop struct {
	tr        *Tracer
	cfg       TraceConfig
	agents    []*agent
	st        *status
	start     time.Time
	packets   int
	errs      []error
	stopped   bool
	announced bool
	joiner    *join.Joiner
	cluster   explain.Cluster

	podEvents     <-chan podEvent
	events        chan event
	streamCtx     context.Context
	cancelStreams context.CancelFunc
	wg            sync.WaitGroup
}

func (s *loop) run(ctx context.Context) error {
	startTimer := time.NewTimer(s.cfg.StartTimeout)
	defer startTimer.Stop()
	tick := time.NewTicker(joinTick)
	defer tick.Stop()
	var finish <-chan time.Time // armed once every agent is ready
	var grace <-chan time.Time  // armed when stopping
	interrupted := false
	done := ctx.Done()

	for s.running() {
		select {
		case pe := <-s.podEvents:
			s.podChanged(pe)
		case ev := <-s.events:
			s.handle(ev)
		case now := <-tick.C:
			for _, p := range s.joiner.Tick(now) {
				s.emit(p)
			}
			s.checkHolds(now)
		case <-startTimer.C:
			s.startTimeout()
		case <-finish:
			s.warn(fmt.Sprintf("the agents did not finish %s after their %s duration; stopping them", finishGrace, s.cfg.Agent.Duration))
			s.stop()
		case <-done:
			done = nil
			interrupted = true
			s.stop()
		case <-grace:
			// Agents that did not say bye in time are deleted (SIGTERM:
			// they still clean up) by Run's deferred deletion.
			s.st.clear()
			return s.result(interrupted)
		}
		if !s.announced && !s.stopped && s.allReady() {
			s.announced = true
			s.announce()
			s.releaseProbes()
			ft := time.NewTimer(s.cfg.Agent.Duration + finishGrace)
			defer ft.Stop()
			finish = ft.C
			startTimer.Stop()
		}
		if s.stopped && grace == nil {
			gt := time.NewTimer(stopGrace)
			defer gt.Stop()
			grace = gt.C
		}
	}
	s.st.clear()
	return s.result(interrupted)
}

// running is true while some agent's output is still open, or a live one
// has yet to start (not once stopping).
func (s *loop) running() bool {
	for _, a := range s.agents {
		if a.started && !a.ended {
			return true
		}
		if !a.started && a.live() && !s.stopped {
			return true
		}
	}
	return false
}

// allReady is true once every live agent is ready and its stdin held, or
// known not to be (and one agent is live).
func (s *loop) allReady() bool {
	n := 0
	for _, a := range s.agents {
		if !a.live() {
			continue
		}
		if a.ready == nil || !a.held && !a.unheld {
			return false
		}
		n++
	}
	return n > 0
}

// checkHolds gives up on the stdin answer of agents ready for holdWait
// without one: the session goes on, and the user knows that killing this
// command leaves them running until their pods' deadline.
func (s *loop) checkHolds(now time.Time) {
	for _, a := range s.agents {
		if a.live() && a.ready != nil && !a.held && !a.unheld && now.Sub(a.readyAt) >= holdWait {
			a.unheld = true
			s.warn(fmt.Sprintf("the agent on node %s did not answer on its stdin (the pods/attach stream svctrace holds) within %s: if this command is killed, the agent stops only at the pod's deadline (%s)",
				a.node, holdWait, s.podDeadline()))
		}
	}
}

// podDeadline is the agent pods' activeDeadlineSeconds.
func (s *loop) podDeadline() time.Duration {
	return s.cfg.StartTimeout + s.cfg.Agent.Duration + deadlineMargin
}

// podChanged follows an agent pod's start-up (and death) on the watch.
func (s *loop) podChanged(pe podEvent) {
	if pe.err != nil {
		if !s.stopped {
			s.warn(fmt.Sprintf("watching the agent pods failed (%v); watching again", pe.err))
		}
		return
	}
	var a *agent
	for _, x := range s.agents {
		if x.pod == pe.name {
			a = x
		}
	}
	if a == nil || !a.live() {
		return
	}
	if pe.deleted {
		a.gone = true
		if !a.started && !s.stopped {
			s.agentFailed(a, fmt.Errorf("agent pod %s/%s on node %s was deleted before it started (by someone else, or `kubectl svctrace cleanup`)", s.cfg.Namespace, a.pod, a.node))
		}
		// A started agent's output ends too: that says the rest.
		return
	}
	if a.started {
		return
	}
	started, state, err := podStarted(pe.pod)
	switch {
	case err != nil:
		s.agentFailed(a, err)
	case started:
		a.started = true
		a.lastState = "starting agent"
		s.showProgress()
		s.follow(a)
	case state != a.lastState:
		a.lastState = state
		s.showProgress()
	}
}

// follow starts reading a started agent's output and holding its stdin.
func (s *loop) follow(a *agent) {
	pr, pw := io.Pipe()
	a.stdin = pw
	if s.stopped {
		pw.Close()
	}
	// The agent's answer says the hold reaches it (record.Attached). The
	// write waits for the attach stream; closing the pipe ends it.
	go func() { _, _ = io.WriteString(pw, record.WordHello+"\n") }()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.tr.follow(s.streamCtx, s.cfg.Namespace, a, pr, s.events)
	}()
}

// stopStreams ends the followers and waits for them.
func (s *loop) stopStreams() {
	s.cancelStreams()
	for _, a := range s.agents {
		if a.stdin != nil {
			a.stdin.Close()
		}
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-s.events:
			case <-time.After(50 * time.Millisecond):
				return
			}
		}
	}()
	s.wg.Wait()
	<-drained
}

// agentFailed takes an agent out of the session. While another agent is
// still in it, the session goes on and the failure is a warning now and
// an error at the end; the last one failing ends the session.
func (s *loop) agentFailed(a *agent, err error) {
	if !a.live() {
		return
	}
	a.failed = err
	if a.stdin != nil {
		a.stdin.Close()
	}
	others := false
	for _, x := range s.agents {
		if x.live() {
			others = true
		}
	}
	s.errs = append(s.errs, err)
	if !others {
		s.stop()
		return
	}
	if !s.stopped {
		s.warn(fmt.Sprintf("lost the agent on node %s, going on with the other nodes: %v", a.node, err))
	}
	s.showProgress()
}

// startTimeout handles agents not ready in time: without any ready agent
// the session fails; otherwise the slow ones are dropped.
func (s *loop) startTimeout() {
	var slow []*agent
	ready := 0
	for _, a := range s.agents {
		switch {
		case !a.live():
		case a.ready == nil:
			slow = append(slow, a)
		default:
			ready++
		}
	}
	if len(slow) == 0 {
		return
	}
	err := s.startTimeoutError(slow)
	if ready == 0 {
		s.fail(err)
		return
	}
	for _, a := range slow {
		s.agentFailed(a, s.startTimeoutError([]*agent{a}))
	}
}

// stop asks every agent to finish: closing its stdin makes it remove its
// rules, flush, send bye and exit.
func (s *loop) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	for _, a := range s.agents {
		if a.stdin != nil {
			a.stdin.Close()
		}
	}
}

func (s *loop) fail(err error) {
	s.errs = append(s.errs, err)
	s.stop()
}

func (s *loop) result(interrupted bool) error {
	for _, p := range s.joiner.Flush() {
		s.emit(p)
	}
	if s.tr.Summarizer != nil && (s.packets > 0 || (s.readyCount() > 0 && len(s.errs) == 0)) {
		sum := s.tr.Summarizer.Summary()
		if err := s.tr.Out.Summary(&sum); err != nil {
			s.errs = append(s.errs, fmt.Errorf("write summary: %w", err))
		}
	}
	why := "the agents finished"
	switch {
	case interrupted:
		why = "interrupted"
	case s.cfg.Count > 0 && s.packets >= s.cfg.Count:
		why = fmt.Sprintf("--count %d reached", s.cfg.Count)
	}
	var failed []string
	for _, a := range s.agents {
		if !a.live() {
			failed = append(failed, a.node)
		}
	}
	switch {
	case len(s.errs) == 0:
		s.info(fmt.Sprintf("Stopped (%s) after %d packet(s); removing the agent pods", why, s.packets))
	case len(failed) > 0 && len(failed) < len(s.agents):
		s.info(fmt.Sprintf("Stopped (%s) after %d packet(s) from %d of %d nodes (no agent on %s); removing the agent pods", why, s.packets, len(s.agents)-len(failed), len(s.agents), strings.Join(failed, ", ")))
	}
	return errors.Join(uniqueErrors(s.errs)...)
}

func (s *loop) readyCount() int {
	n := 0
	for _, a := range s.agents {
		if a.ready != nil {
			n++
		}
	}
	return n
}

func (s *loop) handle(ev event) {
	a := ev.agent
	switch ev.kind {
	case evLog:
		a.keep(ev.line)
		switch {
		case ev.garbled:
			s.warn(fmt.Sprintf("agent on node %s: %s", a.node, ev.line))
		case s.cfg.AgentLog:
			s.info(fmt.Sprintf("[%s] %s", a.node, ev.line))
		}
	case evAttachFailed:
		if !a.ended && !a.unheld {
			a.unheld = true
			s.warn(fmt.Sprintf("could not attach to the agent on node %s (%v): if this command is killed, the agent stops only at the pod's deadline (%s); grant create on pods/attach",
				a.node, ev.err, s.podDeadline()))
		}
	case evRecord:
		s.record(a, ev.rec)
	case evEnd:
		a.ended = true
		switch {
		case a.bye == nil && !s.stopped:
			// The agent went away without its last record: say why.
			s.agentFailed(a, s.tr.diagnose(s.cfg.Namespace, a, ev.err))
		case a.bye == nil && ev.err != nil && !errors.Is(ev.err, context.Canceled):
			s.errs = append(s.errs, fmt.Errorf("agent on node %s: output stream broke: %w", a.node, ev.err))
		}
	}
}

func (s *loop) record(a *agent, rec any) {
	switch r := rec.(type) {
	case *record.Ready:
		if a.ready != nil {
			return
		}
		a.ready, a.readyAt = r, time.Now()
		warn, err := checkVersion(r.Version, s.cfg.Image)
		if err != nil {
			s.fail(err)
			return
		}
		if warn != "" {
			s.warn(warn)
		}
		s.showProgress()
	case *record.Attached:
		a.held = true
		s.showProgress()
	case *record.Packet:
		a.packets++ // every record that arrived: its bye says how many were written
		if !a.live() || s.cfg.Count > 0 && s.packets >= s.cfg.Count {
			return
		}
		annotate(r, s.cfg.Target, a.node)
		if s.tr.Policies != nil {
			s.tr.Policies.Explain(r)
		}
		for _, p := range s.joiner.Add(r, time.Now()) {
			s.emit(p)
		}
	case *record.Lost:
		if r.Node == "" {
			r.Node = a.node
		}
		if s.tr.Summarizer != nil {
			s.tr.Summarizer.AddLost(r.Count)
		}
		s.st.clear()
		if s.tr.SummaryOnly {
			return // counted in the summary
		}
		if err := s.tr.Out.Lost(r); err != nil {
			s.fail(fmt.Errorf("write lost record: %w", err))
		}
	case *record.Warning:
		if r.Node == "" {
			r.Node = a.node
		}
		s.st.clear()
		if s.tr.SummaryOnly {
			msg := r.Message
			if r.Node != "" {
				msg = "node " + r.Node + ": " + msg
			}
			s.warn(msg)
			return
		}
		if err := s.tr.Out.Warning(r); err != nil {
			s.fail(fmt.Errorf("write warning: %w", err))
		}
	case *record.Bye:
		// Its last record: what follows in the stream is its end.
		a.bye, a.ended = r, true
		if r.Error != "" {
			s.agentFailed(a, fmt.Errorf("agent on node %s: %s", a.node, r.Error))
			return
		}
		if r.Packets > a.packets {
			// Written by the agent, never read here: say so, not 0 packets.
			s.warn(fmt.Sprintf("the agent on node %s wrote %d packet record(s) but %d reached svctrace: its output stream (pods/log) lost lines%s",
				a.node, r.Packets, a.packets, a.lastLines()))
		}
		if r.Reason == "stdin" && !s.stopped {
			s.warn(fmt.Sprintf("the agent on node %s stopped early: its stdin (the pods/attach stream svctrace holds) closed before svctrace asked it to stop", a.node))
		}
	}
}

// emit writes one whole packet (joined across nodes when it crossed them).
func (s *loop) emit(p *record.Packet) {
	if s.cfg.Count > 0 && s.packets >= s.cfg.Count {
		return
	}
	explain.WithCluster(p, s.cluster)
	s.packets++
	if s.tr.Summarizer != nil {
		s.tr.Summarizer.Add(p)
	}
	s.st.clear()
	if s.tr.SummaryOnly {
		// Counted above; only the summary is written.
	} else if err := s.tr.Out.Packet(p); err != nil {
		s.fail(fmt.Errorf("write packet: %w", err))
		return
	}
	if s.cfg.Count > 0 && s.packets >= s.cfg.Count {
		s.stop()
	}
}

// releaseProbes tells the probing agents that every agent is ready. The
// write waits for the attach stream, so it runs beside the loop; closing the
// pipe on the way out ends it.
func (s *loop) releaseProbes() {
	for _, a := range s.agents {
		if a.probeWhenTold && a.live() && a.stdin != nil {
			go func(w *io.PipeWriter) { _, _ = io.WriteString(w, record.WordProbe+"\n") }(a.stdin)
		}
	}
}

// announce says, once every agent is ready, what is being traced and
// which node plays which part.
func (s *loop) announce() {
	s.st.clear()
	t := s.cfg.Target
	what := strings.Join(t.Dst, ", ")
	if len(t.NodePorts) > 0 {
		if what != "" {
			what += " and "
		}
		what += "NodePort " + joinInt32(t.NodePorts)
	}
	var nodes []string
	for _, a := range s.agents {
		if !a.live() {
			continue
		}
		r := a.ready
		part := ""
		if len(a.roles.Roles) > 0 {
			part = strings.Join(a.roles.Roles, "+") + "; "
			if a.roles.Endpoints > 0 {
				part = fmt.Sprintf("%s with %d endpoint(s); ", strings.Join(a.roles.Roles, "+"), a.roles.Endpoints)
			}
		}
		nodes = append(nodes, fmt.Sprintf("%s (%s%s, kube-proxy %s, %s)", a.node, part, r.Backend, r.Mode, r.Source))
	}
	next := "send traffic now; Ctrl-C to stop"
	switch {
	case s.cfg.From != nil:
		next = fmt.Sprintf("sending a test connection from pod %s (%s); Ctrl-C to stop", s.cfg.From.DisplayName(), s.cfg.From.IP)
	case s.cfg.Agent.Probe:
		next = "sending a test connection; Ctrl-C to stop"
	}
	s.info(fmt.Sprintf("Tracing %s %s/%s on %s; ready in %.1fs: %s",
		t.DisplayName(), what, strings.ToUpper(t.Proto), strings.Join(nodes, ", "), time.Since(s.start).Seconds(), next))
}

func (s *loop) showProgress() {
	if s.stopped || s.announced {
		return
	}
	if len(s.agents) == 1 {
		a := s.agents[0]
		s.st.set(fmt.Sprintf("Waiting for agent pod %s/%s on node %s: %s...", s.cfg.Namespace, a.pod, a.node, a.state()))
		return
	}
	counts := map[string]int{}
	var order []string
	for _, a := range s.agents {
		state := a.state()
		if counts[state] == 0 {
			order = append(order, state)
		}
		counts[state]++
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = fmt.Sprintf("%d %s", counts[k], k)
	}
	s.st.set(fmt.Sprintf("Waiting for %d agent pods in namespace %s: %s...", len(s.agents), s.cfg.Namespace, strings.Join(parts, ", ")))
}

func (s *loop) startTimeoutError(slow []*agent) error {
	var d []string
	for _, a := range slow {
		x := fmt.Sprintf("%s (%s)", a.node, orText(a.lastState, "not created"))
		if len(a.tail) > 0 {
			x += ": last output: " + a.tail[len(a.tail)-1]
		}
		d = append(d, x)
	}
	return fmt.Errorf("the agent did not become ready within %s on %s: check the pod with `kubectl describe pod -n %s -l %s`, or allow more time with --pod-running-timeout (a NotReady node, or one that cannot pull the image, never starts it)",
		s.cfg.StartTimeout, strings.Join(d, "; "), s.cfg.Namespace, LabelManagedBy+"="+ManagedByValue)
}

func (s *loop) info(msg string) {
	if s.tr.Quiet {
		return
	}
	s.st.clear()
	fmt.Fprintln(s.tr.ErrOut, msg)
}

// warn is shown even with -q: it may change how to read the result.
func (s *loop) warn(msg string) {
	s.st.clear()
	fmt.Fprintln(s.tr.ErrOut, "Warning: "+msg)
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// follow runs one started agent's client side: hold its stdin, and turn
// its output into events. It ends when the output ends.
func (tr *Tracer) follow(ctx context.Context, ns string, a *agent, stdin *io.PipeReader, events chan<- event) {
	send := func(ev event) {
		ev.agent = a
		select {
		case events <- ev:
		case <-ctx.Done():
		}
	}
	holdDone := make(chan struct{})
	// follow returns only after this goroutine, so it never sends on the
	// events channel after the session stopped reading it.
	defer func() { <-holdDone }()
	go func() {
		defer close(holdDone)
		// A failed attach only loses the lost-client signal: the pod's
		// activeDeadlineSeconds is still the last resort.
		if err := tr.IO.HoldStdin(ctx, ns, a.pod, stdin); err != nil && ctx.Err() == nil {
			send(event{kind: evAttachFailed, err: err})
		}
	}()

	out, err := tr.IO.Output(ctx, ns, a.pod)
	if err != nil {
		send(event{kind: evEnd, err: err})
		return
	}
	defer out.Close()
	sc := bufio.NewScanner(out)
	// A packet with hundreds of hops is a long line.
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for sc.Scan() {
		rec, ok, derr := decodeRecord(sc.Bytes())
		switch {
		case derr != nil:
			send(event{kind: evLog, line: derr.Error(), garbled: true})
		case ok:
			send(event{kind: evRecord, rec: rec})
		default:
			if line := strings.TrimSpace(sc.Text()); line != "" {
				send(event{kind: evLog, line: line})
			}
		}
	}
	send(event{kind: evEnd, err: sc.Err()})
}

// podStarted says whether the agent container has started (its output can
// be read), the start-up state in words, or why it never will. Pure.
func podStarted(pod *corev1.Pod) (bool, string, error) {
	where := fmt.Sprintf("agent pod %s/%s on node %s", pod.Namespace, pod.Name, pod.Spec.NodeName)
	var cs *corev1.ContainerStatus
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == AgentContainer {
			cs = &pod.Status.ContainerStatuses[i]
		}
	}
	switch pod.Status.Phase {
	case corev1.PodRunning, corev1.PodSucceeded:
		return true, "running", nil
	case corev1.PodFailed:
		if cs != nil && cs.State.Terminated != nil {
			return true, "ended", nil // its output says why
		}
		return false, "", fmt.Errorf("%s failed before its container started (%s: %s): check the node with `kubectl describe node %s`",
			where, orText(pod.Status.Reason, "unknown reason"), pod.Status.Message, pod.Spec.NodeName)
	}
	if cs == nil || cs.State.Waiting == nil {
		if cs != nil && (cs.State.Running != nil || cs.State.Terminated != nil) {
			return true, "running", nil
		}
		return false, "scheduling", nil
	}
	w := cs.State.Waiting
	switch w.Reason {
	case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
		return false, "", fmt.Errorf("%s cannot get its image %q (%s: %s): make the image available to the node (push it to a registry the node can pull from, or load it into the node's container runtime) or pass another one with --image",
			where, cs.Image, w.Reason, w.Message)
	case "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "PreCreateHookError", "PreStartHookError":
		return false, "", fmt.Errorf("%s could not start its container (%s: %s)", where, w.Reason, w.Message)
	case "ContainerCreating", "PodInitializing", "":
		return false, "pulling the image (if needed) and creating the container", nil
	}
	return false, strings.ToLower(w.Reason), nil
}

// diagnose explains an agent whose output ended without a bye record.
func (tr *Tracer) diagnose(ns string, a *agent, streamErr error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	detail := a.lastLines()
	pod, err := tr.Client.CoreV1().Pods(ns).Get(ctx, a.pod, metav1.GetOptions{})
	if err == nil {
		for _, cs := range pod.Status.ContainerStatuses {
			if term := cs.State.Terminated; term != nil {
				msg := strings.TrimSpace(term.Message)
				if msg != "" && detail == "" {
					detail = "; its last output: " + msg
				}
				return fmt.Errorf("the agent on node %s exited (code %d, %s) before finishing its session%s", a.node, term.ExitCode, term.Reason, detail)
			}
		}
		if pod.Status.Reason == "DeadlineExceeded" {
			return fmt.Errorf("the agent pod on node %s reached its activeDeadlineSeconds and was stopped%s", a.node, detail)
		}
	}
	if streamErr != nil {
		return fmt.Errorf("lost the agent's output on node %s: %w%s", a.node, streamErr, detail)
	}
	return fmt.Errorf("the agent's output on node %s ended before it finished its session%s", a.node, detail)
}

// createError explains why an agent pod could not be created.
func createError(err error, ns, node string) error {
	switch {
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "PodSecurity"):
		return fmt.Errorf("namespace %q does not allow the agent's privileged pod (Pod Security admission): run it in a namespace that does with --agent-namespace (e.g. kube-system), or allow it with `kubectl label namespace %s pod-security.kubernetes.io/enforce=privileged`: %w", ns, ns, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("agent namespace %q not found: pass an existing one with --agent-namespace: %w", ns, err)
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("create agent pod on node %q: a pod of that name exists; remove leftovers with `kubectl svctrace cleanup`: %w", node, err)
	}
	return apiError(err, "create", "pods", ns)
}

// deletePods deletes the agent pods. It waits, on the session's watch,
// until they are gone when wait is set, and otherwise for the pods of the
// agents that did not confirm in their bye that they removed their rules
// (they remove them on the SIGTERM of the deletion), so that when the
// command returns no TRACE rule is left. The others' deletion only has to
// be accepted. It uses its own context: the caller's may already be
// canceled (Ctrl-C).
func (tr *Tracer) deletePods(ns string, agents []*agent, events <-chan podEvent, wait bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	var errs []error
	pending := map[string]bool{}
	for _, a := range agents {
		if !a.created || a.gone {
			continue
		}
		err := tr.Client.CoreV1().Pods(ns).Delete(ctx, a.pod, metav1.DeleteOptions{})
		switch {
		case err == nil:
			if wait || a.started && !a.cleanedUp() {
				pending[a.pod] = true
			}
		case apierrors.IsNotFound(err):
		default:
			errs = append(errs, fmt.Errorf("delete agent pod %s/%s (delete it with `kubectl delete pod -n %s %s` or `kubectl svctrace cleanup`): %w", ns, a.pod, ns, a.pod, apiError(err, "delete", "pods", ns)))
		}
	}
	for len(pending) > 0 {
		select {
		case ev := <-events:
			if ev.deleted {
				delete(pending, ev.name)
			}
		case <-ctx.Done():
			left := make([]string, 0, len(pending))
			for name := range pending {
				left = append(left, name)
			}
			sort.Strings(left)
			errs = append(errs, fmt.Errorf("agent pod(s) %s in namespace %s still terminating: their agents remove the TRACE rules when they stop; check with `kubectl get pods -n %s -l %s`", strings.Join(left, ", "), ns, ns, ManagedSelector))
			return errors.Join(errs...)
		}
	}
	return errors.Join(errs...)
}

// deleteAndWait deletes pods by name and polls until they are gone.
func deleteAndWait(ctx context.Context, client kubernetes.Interface, ns string, names []string) error {
	var errs []error
	pending := map[string]bool{}
	for _, name := range names {
		err := client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{})
		switch {
		case err == nil:
			pending[name] = true
		case apierrors.IsNotFound(err):
		default:
			errs = append(errs, fmt.Errorf("delete agent pod %s/%s (delete it with `kubectl delete pod -n %s %s` or `kubectl svctrace cleanup`): %w", ns, name, ns, name, apiError(err, "delete", "pods", ns)))
		}
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for len(pending) > 0 {
		for name := range pending {
			_, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				delete(pending, name)
			}
		}
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			var left []string
			for name := range pending {
				left = append(left, name)
			}
			errs = append(errs, fmt.Errorf("agent pod(s) %s in namespace %s still terminating: their agents remove the TRACE rules when they stop; check with `kubectl get pods -n %s -l %s`", strings.Join(left, ", "), ns, ns, ManagedSelector))
			return errors.Join(errs...)
		case <-tick.C:
		}
	}
	return errors.Join(errs...)
}

// status is a one-line progress display on a terminal (nothing otherwise).
type status struct {
	w     io.Writer
	on    bool
	shown bool
}

func (s *status) set(line string) {
	if !s.on {
		return
	}
	fmt.Fprintf(s.w, "\r\x1b[K%s", line)
	s.shown = true
}

func (s *status) clear() {
	if s.on && s.shown {
		fmt.Fprint(s.w, "\r\x1b[K")
		s.shown = false
	}
}
