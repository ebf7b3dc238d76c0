// Package record defines svctrace's NDJSON stream: the records the engine,
// the node agent and the plugin exchange and print with -o json. Field names
// are a public contract: fields may be added, never renamed.
package record
