// Package render writes svctrace records for people (aligned text, colour on
// a terminal) and for programs (NDJSON, exactly the pkg/record contract).
// It only writes to the io.Writers it is given.
package render
