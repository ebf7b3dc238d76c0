package cmd

// ExitError carries a specific exit code for an error (main prints the error
// and exits with Code).
type ExitError struct {
	Code int
	Err  error
}

func (e ExitError) Error() string { return e.Err.Error() }

func (e ExitError) Unwrap() error { return e.Err }
