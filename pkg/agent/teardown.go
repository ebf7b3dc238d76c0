//go:build linux

package agent

import (
	"context"
	"errors"
)

// teardown undoes what begin did, on every way out: rules first (no new
// traces), then the loggers and the sources (what the kernel queued before
// is still read). Each part runs once; it returns the rules removed.
func (s *session) teardown() (int, error) {
	n, rerr := s.removeRules()
	return n, errors.Join(rerr, s.finish())
}

// removeRules removes the session's TRACE rules (and what inserting them
// created), once.
func (s *session) removeRules() (int, error) {
	if s.rulesRemoved || s.tr == nil {
		return 0, nil
	}
	s.rulesRemoved = true
	// The cleanup's own time, starting now: the session's context is
	// already cancelled when it runs.
	cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	return s.tr.remove(cctx)
}

// finish restores the loggers svctrace bound and closes the sources, once.
func (s *session) finish() error {
	if s.finished {
		return nil
	}
	s.finished = true
	var errs []error
	for fam := range s.loggerSet {
		errs = append(errs, restoreLogger(s.h.ProcRoot, fam))
	}
	for _, p := range s.pipes {
		errs = append(errs, p.src.Close())
	}
	return errors.Join(errs...)
}
