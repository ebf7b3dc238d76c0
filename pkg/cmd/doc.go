// Package cmd holds svctrace's cobra commands and their Options: flags in,
// a plain config out to the package that does the work. No logic lives here.
package cmd
