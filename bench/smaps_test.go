package bench

import "testing"

// An abridged smaps of kvmm running the idle guest with 128 MiB.
const kvmmSmaps = `00400000-00774000 r-xp 00000000 fe:00 9992126                            /work/main/bin/kvmm
Size:               3536 kB
KernelPageSize:        4 kB
Rss:                2768 kB
Pss:                2768 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
1da4d0000000-1da4d0400000 rw-p 00000000 00:00 0 
Size:               4096 kB
Rss:                 788 kB
Anonymous:           788 kB
7f0938000000-7f0940021000 rw-p 00000000 00:00 0 
Size:             131204 kB
Rss:                  36 kB
Anonymous:            36 kB
7f0958e00000-7f096c949000 ---p 00000000 00:00 0 
Size:             322852 kB
Rss:                   0 kB
Anonymous:             0 kB
7f099d941000-7f099d967000 r--p 00000000 fe:00 326269                     /usr/lib/x86_64-linux-gnu/lib c.so.6
Size:                152 kB
Rss:                 148 kB
Anonymous:             0 kB
7ffd1b1e5000-7ffd1b206000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  24 kB
Anonymous:            24 kB
`

func TestParseSmaps(t *testing.T) {
	maps, err := ParseSmaps([]byte(kvmmSmaps))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 6 {
		t.Fatalf("%d mappings, want 6", len(maps))
	}
	m := maps[0]
	if m.Start != 0x400000 || m.End != 0x774000 || m.Perms != "r-xp" || m.Path != "/work/main/bin/kvmm" ||
		m.Size != 3536<<10 || m.Rss != 2768<<10 || m.Anonymous != 0 || m.Anon() {
		t.Errorf("first mapping = %+v", m)
	}
	if !maps[2].Anon() || maps[2].Size != 131204<<10 {
		t.Errorf("guest mapping = %+v", maps[2])
	}
	if got := maps[4].Path; got != "/usr/lib/x86_64-linux-gnu/lib c.so.6" {
		t.Errorf("path with a space = %q", got)
	}
	if maps[5].Anon() {
		t.Errorf("[stack] counted as anonymous mapping")
	}
}

func TestParseSmapsErrors(t *testing.T) {
	for _, in := range []string{
		"Rss: 4 kB\n",
		"00400000-00401000 r-xp 00000000 fe:00 1 /bin/x\nRss: four kB\n",
		"00400000-00401000 r-xp 00000000 fe:00 1 /bin/x\nRss: 4 MB\n",
	} {
		if _, err := ParseSmaps([]byte(in)); err == nil {
			t.Errorf("ParseSmaps(%q): no error", in)
		}
	}
}

func TestSplitMemory(t *testing.T) {
	maps, err := ParseSmaps([]byte(kvmmSmaps))
	if err != nil {
		t.Fatal(err)
	}
	u, err := SplitMemory(maps, 128<<20)
	if err != nil {
		t.Fatal(err)
	}
	total := uint64(2768+788+36+148+24) << 10
	if u.Total != total || u.GuestTouched != 36<<10 || u.Anonymous != (788+36+24)<<10 {
		t.Errorf("SplitMemory = %+v", u)
	}
	if got, want := u.Overhead(), total-36<<10; got != want {
		t.Errorf("Overhead = %d, want %d", got, want)
	}
	if got, want := u.AnonOverhead(), uint64(788+24)<<10; got != want {
		t.Errorf("AnonOverhead = %d, want %d", got, want)
	}
	if got, want := u.FileBacked(), uint64(2768+148)<<10; got != want {
		t.Errorf("FileBacked = %d, want %d", got, want)
	}
}

func TestSplitMemoryPicksTheSmallestFit(t *testing.T) {
	maps := []Mapping{
		{Perms: "rw-p", Size: 130 << 20, Rss: 3 << 20, Anonymous: 3 << 20},
		{Perms: "rw-p", Size: 128 << 20, Rss: 2 << 20, Anonymous: 2 << 20},
		{Perms: "rw-p", Size: 64 << 20, Rss: 1 << 20, Anonymous: 1 << 20},  // too small
		{Perms: "rw-p", Size: 256 << 20, Rss: 1 << 20, Anonymous: 1 << 20}, // too large
		{Perms: "r--p", Size: 128 << 20, Rss: 1 << 20, Path: "/memfd:x"},   // a file
	}
	u, err := SplitMemory(maps, 128<<20)
	if err != nil {
		t.Fatal(err)
	}
	if u.GuestTouched != 2<<20 || u.GuestMapping.Size != 128<<20 {
		t.Errorf("picked %+v", u.GuestMapping)
	}
	if _, err := SplitMemory(maps[2:4], 128<<20); err == nil {
		t.Error("no fitting mapping: no error")
	}
}
