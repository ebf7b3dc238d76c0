//go:build linux

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LegacyTables returns the iptables-legacy tables that exist in this
// network namespace (/proc/net/ip_tables_names or ip6_tables_names).
func LegacyTables(procRoot string, fam uint8) ([]string, error) {
	name := "ip_tables_names"
	if fam == 6 {
		name = "ip6_tables_names"
	}
	data, err := os.ReadFile(procRoot + "/net/" + name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil // legacy x_tables not built into this kernel
		}
		return nil, fmt.Errorf("read legacy table names: %w", err)
	}
	return strings.Fields(string(data)), nil
}

// Noticing kube-proxy rewriting legacy rules, cheaply: the kernel keeps no
// generation for x_tables, but IPT_SO_GET_INFO returns each table's entry
// count, size and hook offsets without copying the rules; kube-proxy adding
// or removing a rule changes them. A rewrite that keeps every size (an
// endpoint replaced by one with an address of the same length) is not
// seen: the session re-reads the ruleset now and then for that.
//
// This stays ours: x/sys/unix has neither the option nor struct
// ipt_getinfo, and no Go library reads it.

// iptSoGetInfo is IPT_SO_GET_INFO and IP6T_SO_GET_INFO
// (linux/netfilter_ipv4/ip_tables.h).
const iptSoGetInfo = 64

// iptGetinfo mirrors struct ipt_getinfo (and ip6t_getinfo, same layout).
type iptGetinfo struct {
	Name       [32]byte
	ValidHooks uint32
	HookEntry  [5]uint32
	Underflow  [5]uint32
	NumEntries uint32
	Size       uint32
}

// legacyTableInfo reads a legacy table's shape. The table must exist
// (LegacyTables): asking for a missing one would create it.
func legacyTableInfo(fam uint8, table string) (iptGetinfo, error) {
	var info iptGetinfo
	if len(table) >= len(info.Name) {
		return info, fmt.Errorf("table name %q too long", table)
	}
	copy(info.Name[:], table)
	domain, level := unix.AF_INET, unix.SOL_IP
	if fam == 6 {
		domain, level = unix.AF_INET6, unix.SOL_IPV6
	}
	fd, err := unix.Socket(domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return info, fmt.Errorf("open a raw socket to read legacy table %s: %w", table, err)
	}
	defer unix.Close(fd)
	l := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), iptSoGetInfo,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return info, fmt.Errorf("read legacy table %s info: %w", table, errno)
	}
	return info, nil
}

// iptSoGetEntries is IPT_SO_GET_ENTRIES and IP6T_SO_GET_ENTRIES.
const iptSoGetEntries = 65

// Layout of struct ipt_get_entries / ip6t_get_entries and of each entry:
// the header is the name and size, padded to the entries' 8-byte
// alignment; every entry keeps its next_offset and its packet and byte
// counters at fixed offsets (struct ipt_entry: 112 bytes, ip6t_entry: 168).
const getEntriesHeader = 40

var entryLayout = map[uint8]struct{ nextOffset, counters int }{
	4: {nextOffset: 90, counters: 96},
	6: {nextOffset: 142, counters: 152},
}

// legacyTableHash hashes a legacy table's rules (IPT_SO_GET_ENTRIES), its
// counters left out: unlike the shape, it changes when a rule is replaced
// by one of the same size, or a chain renamed (kube-router does both at
// every sync). The table must exist (LegacyTables).
func legacyTableHash(fam uint8, table string, info iptGetinfo) (uint64, error) {
	lay, ok := entryLayout[fam]
	if !ok {
		return 0, fmt.Errorf("IPv%d has no legacy tables", fam)
	}
	buf := make([]byte, getEntriesHeader+int(info.Size))
	copy(buf, table)
	binary.NativeEndian.PutUint32(buf[32:], info.Size)
	domain, level := unix.AF_INET, unix.SOL_IP
	if fam == 6 {
		domain, level = unix.AF_INET6, unix.SOL_IPV6
	}
	fd, err := unix.Socket(domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return 0, fmt.Errorf("open a raw socket to read legacy table %s: %w", table, err)
	}
	defer unix.Close(fd)
	l := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), iptSoGetEntries,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		// EAGAIN: the table changed size since its info was read.
		return 0, fmt.Errorf("read legacy table %s rules: %w", table, errno)
	}
	entries := buf[getEntriesHeader:]
	for off := 0; off+lay.counters+16 <= len(entries); {
		clear(entries[off+lay.counters : off+lay.counters+16])
		next := int(binary.NativeEndian.Uint16(entries[off+lay.nextOffset:]))
		if next <= 0 {
			break
		}
		off += next
	}
	h := fnv.New64a()
	h.Write(entries)
	return h.Sum64(), nil
}

// LegacyFingerprint hashes the shape of every legacy table of a family, and
// the rules of those other than nat (small, and where CNIs such as
// kube-router rewrite rules keeping their shape; kube-proxy's nat table can
// be megabytes, and its same-shape rewrites are rare).
func LegacyFingerprint(procRoot string, fam uint8) (uint64, error) {
	tables, err := LegacyTables(procRoot, fam)
	if err != nil {
		return 0, err
	}
	h := fnv.New64a()
	var b [4]byte
	for _, t := range tables {
		info, err := legacyTableInfo(fam, t)
		if err != nil {
			return 0, err
		}
		h.Write([]byte(t))
		for _, v := range append(append([]uint32{info.ValidHooks, info.NumEntries, info.Size}, info.HookEntry[:]...), info.Underflow[:]...) {
			binary.LittleEndian.PutUint32(b[:], v)
			h.Write(b[:])
		}
		if t != "nat" {
			rules, err := legacyTableHash(fam, t, info)
			if err != nil {
				return 0, err
			}
			var r [8]byte
			binary.LittleEndian.PutUint64(r[:], rules)
			h.Write(r[:])
		}
	}
	return h.Sum64(), nil
}
