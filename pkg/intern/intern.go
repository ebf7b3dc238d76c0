package intern

// Table interns strings. The map lookup m[string(b)] does not allocate;
// only a miss does. It is bounded: past max entries new strings are
// allocated but not remembered, so hostile input cannot grow it forever.
//
// A small direct-mapped cache in front of the map, keyed by a cheap hash of
// a few bytes, answers most lookups with one comparison: the same few
// strings tend to come back.
//
// A Table is not safe for concurrent use; its strings are, as any string.
type Table struct {
	m     map[string]string
	max   int
	cache [256]string
}

// New returns a Table remembering at most max strings.
func New(max int) Table {
	return Table{m: make(map[string]string, 64), max: max}
}

// Get returns b as a string, the one handed out before for the same bytes
// when the Table remembers it.
func (t *Table) Get(b []byte) string {
	n := len(b)
	if n == 0 {
		return ""
	}
	slot := (uint(n)*151 + uint(b[0])*31 + uint(b[n-1])*131 + uint(b[n/2])*7 + uint(b[n*3/4])) & 255
	if s := t.cache[slot]; s == string(b) {
		return s
	}
	s, ok := t.m[string(b)]
	if !ok {
		s = string(b)
		if len(t.m) < t.max {
			t.m[s] = s
		}
	}
	t.cache[slot] = s
	return s
}

// Len returns how many strings the Table remembers.
func (t *Table) Len() int { return len(t.m) }
