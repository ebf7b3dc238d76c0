//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"slices"
	"strings"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// listedRule is an svctrace rule found in a raw table.
type listedRule struct {
	b     ipBackend
	fam   uint8
	chain string
	args  []string // after "-A CHAIN"
	sid   string
	flags string
}

// listSvctraceRules returns every rule tagged svctrace: in the raw tables
// of both backends and both families. It reads only tables that exist (a
// legacy table is created by merely listing it).
func listSvctraceRules(ctx context.Context, h *host) ([]listedRule, error) {
	var out []listedRule
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		for _, fam := range []uint8{4, 6} {
			tables, err := h.tablesOf(b, fam)
			if err != nil {
				// No nf_tables netlink, or no legacy tables at all:
				// nothing of ours can be there.
				continue
			}
			if !slices.Contains(tables, "raw") {
				continue
			}
			// Listing one chain at a time: a whole iptables-nft table
			// listing builds a cache of every table (slow on big nodes).
			chains := []string{""}
			if b == backendNft {
				n, err := h.nftables()
				if err != nil {
					return nil, err
				}
				if chains, _, err = n.Chains(fam, "raw"); err != nil {
					return nil, err
				}
			}
			var data []byte
			for _, c := range chains {
				args := []string{"-w", "-t", "raw", "-S"}
				if c != "" {
					args = append(args, c)
				}
				out, err := h.run(ctx, b.Binary(fam), args...)
				if err != nil {
					if isNoSuchChain(err) {
						continue // deleted meanwhile
					}
					return nil, fmt.Errorf("list the raw table with %s: %w", b.Binary(fam), err)
				}
				data = append(data, out...)
			}
			forEachLine(data, func(line string) {
				if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, commentPrefix) {
					return
				}
				args := splitRuleArgs(line)
				sid, flags, ok := parseComment(argValue(args, "--comment"))
				if !ok || len(args) < 3 {
					return
				}
				out = append(out, listedRule{b: b, fam: fam, chain: args[1], args: args[2:], sid: sid, flags: flags})
			})
		}
	}
	return out, nil
}

// sweep removes svctrace rules: all of them (all=true, `agent --cleanup`),
// or those of sessions proven dead. Rules of sessions that may be alive in a
// pid namespace this agent cannot see are left, with a warning. Each rule is
// deleted by its exact spec; the nft chains/table and the nf_log binding the
// dead sessions created are undone once nothing of svctrace uses them.
func sweep(ctx context.Context, h *host, all bool, now time.Time) (removed int, warnings []string, err error) {
	listed, err := listSvctraceRules(ctx, h)
	if err != nil {
		return 0, nil, err
	}
	p := h.proc()
	verdicts := map[string]liveness{}
	var errs []error
	created := map[rawChain]string{}
	loggers := map[uint8]bool{}
	remaining := map[uint8]bool{} // legacy families with live svctrace rules left
	for _, r := range listed {
		v, ok := verdicts[r.sid]
		if !ok {
			v = sessionDead
			if !all {
				// An unparsable id was not written by this version:
				// left alone unless --cleanup.
				v = sessionUnknown
				if sid, perr := parseSessionID(r.sid); perr == nil {
					v = sessionLiveness(p, sid, now)
				}
			}
			verdicts[r.sid] = v
			if v == sessionUnknown {
				warnings = append(warnings, fmt.Sprintf("TRACE rules of svctrace session %s are left in place: it may still run in another pod (its process is not visible here); `kubectl svctrace cleanup` removes them", r.sid))
			}
		}
		if v != sessionDead {
			if r.b == backendLegacy {
				remaining[r.fam] = true
			}
			continue
		}
		ipt, err := h.iptables(r.b, r.fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch err := ipt.Delete("raw", r.chain, r.args...); {
		case err == nil:
			removed++
		case isGoIptablesNotExist(err):
		default:
			errs = append(errs, fmt.Errorf("delete svctrace rule in raw %s with %s: %w", r.chain, r.b.Binary(r.fam), err))
		}
		if r.b == backendNft {
			created[rawChain{r.b, r.fam, r.chain}] += r.flags
		}
		if r.b == backendLegacy && strings.ContainsRune(r.flags, flagSetLogger) {
			loggers[r.fam] = true
		}
	}
	if err := dropCreated(ctx, h, created); err != nil {
		errs = append(errs, err)
	}
	for fam := range loggers {
		if !remaining[fam] {
			errs = append(errs, restoreLogger(h.ProcRoot, fam))
		}
	}
	return removed, warnings, errors.Join(errs...)
}

// Cleanup removes every svctrace rule on the node (both backends, both
// families, any session), undoes what those sessions created, and writes a
// bye record with the count (`kubectl-svctrace agent --cleanup`).
func Cleanup(ctx context.Context, node string, streams IO) error {
	return cleanupWith(ctx, node, streams, options{})
}

// cleanupWith is Cleanup with test seams.
func cleanupWith(ctx context.Context, node string, streams IO, opts options) error {
	h := opts.Host
	if h == nil {
		h = newHost()
		defer h.Close()
	}
	if streams.Err == nil {
		streams.Err = io.Discard
	}
	lg := log.New(streams.Err, "svctrace agent: ", 0)
	out := newOutput(streams.Out)
	n, warns, err := sweep(ctx, h, true, time.Now())
	for _, w := range warns {
		lg.Printf("warning: %s", w)
	}
	lg.Printf("removed %d svctrace TRACE rule(s)", n)
	bye := record.Bye{Type: record.TypeBye, Node: node, RulesRemoved: n, Reason: "cleanup"}
	if err != nil {
		bye.Reason = "error"
		bye.Error = err.Error()
	}
	if werr := out.write(&bye); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("clean up svctrace rules: %w", err)
	}
	return nil
}
