package schedule

import "testing"

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"100B/s", 100, true},
		{"512KiB/s", 512 << 10, true},
		{"20MiB/s", 20 << 20, true},
		{"1GB/s", 1e9, true},
		{"1.5MB/s", 1500000, true},
		{"10kB/s", 10000, true},
		{"2 GiB/s", 2 << 30, true},
		{"1TiB/s", 1 << 40, true},
		{"100", 0, false},
		{"100/s", 0, false},
		{"20MiB", 0, false},
		{"20M/s", 0, false},
		{"20mib/s", 0, false},
		{"0B/s", 0, false},
		{"-1MB/s", 0, false},
		{"", 0, false},
		{"99999999TiB/s", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
