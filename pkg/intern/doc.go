// Package intern hands out one string per distinct byte sequence, so that
// code making the same strings over and over (decoded names, formatted
// addresses and sentences) allocates only for the first of each.
package intern
