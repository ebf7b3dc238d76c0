// Package render writes svctrace records for people (aligned text, colour on
// a terminal: each packet's story first, the hops that decided something,
// the rest folded; every hop with Wide) and for programs (NDJSON, exactly
// the pkg/record contract, packets encoded by hand for speed). It only
// writes to the io.Writers it is given, and lays out facts: the sentences
// about packets come from package explain.
package render
