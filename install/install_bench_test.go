package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ted/distribution"
	"ted/subscriber/cluster"
)

// BenchmarkUpgrade measures an upgrade through the installer (journal,
// backups of every file replaced, write, remove, commit) of a tree of 2,000
// files of 4 KiB, and reports it as a ratio to writing the same revision
// with distribution.Materialize alone, in the same run: the price of
// crash safety and rollback.
func BenchmarkUpgrade(b *testing.B) {
	const files = 2000
	src := b.TempDir()
	for i := range files {
		writeFile(b, filepath.Join(src, fmt.Sprintf("d%02d/f%04d", i%50, i)), binary(uint64(i), 4<<10), 0o644)
	}
	f := newFixture(b)
	var manifests []*distribution.Manifest
	for rev := uint64(1); rev <= uint64(b.N)+1; rev++ {
		m := f.publishWith(src, distribution.BuildOptions{Name: "web", Revision: rev, Version: fmt.Sprintf("1.%d", rev), Target: "web",
			// Each revision differs in metadata only, so every file is replaced.
			Post: []string{fmt.Sprintf("true %d", rev)}})
		manifests = append(manifests, m)
	}
	in, err := New(f.root, f.state, f.store, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := in.Install(context.Background(), manifests[0], nil); err != nil {
		b.Fatal(err)
	}
	var plain time.Duration
	b.ResetTimer()
	for i := range b.N {
		if err := in.Install(context.Background(), manifests[i+1], nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		dest := filepath.Join(b.TempDir(), "plain")
		start := time.Now()
		if err := distribution.Materialize(context.Background(), manifests[i+1], f.store, dest, distribution.MaterializeOptions{}); err != nil {
			b.Fatal(err)
		}
		plain += time.Since(start)
		_ = os.RemoveAll(dest)
		b.StartTimer()
	}
	b.StopTimer()
	if plain > 0 {
		b.ReportMetric(float64(b.Elapsed())/float64(plain), "x_materialize")
	}
}

// BenchmarkUpgradeFenced is BenchmarkUpgrade's upgrade with a cluster
// node's fence (the lease checked by the clock and the epoch read back from
// the shared directory before every change) against the same upgrade
// without, alternating in the same run: the price of fencing each write.
func BenchmarkUpgradeFenced(b *testing.B) {
	const files = 2000
	src := b.TempDir()
	for i := range files {
		writeFile(b, filepath.Join(src, fmt.Sprintf("d%02d/f%04d", i%50, i)), binary(uint64(i), 4<<10), 0o644)
	}
	shared := b.TempDir()
	fence, err := cluster.Claim(shared, cluster.Holder{Epoch: 7, Node: "a", Instance: "i"}, func() bool { return true }, nil)
	if err != nil {
		b.Fatal(err)
	}
	var fenced, plain time.Duration
	for _, withFence := range []bool{false, true} {
		f := newFixture(b)
		var manifests []*distribution.Manifest
		for rev := uint64(1); rev <= uint64(b.N)+1; rev++ {
			manifests = append(manifests, f.publishWith(src, distribution.BuildOptions{Name: "web", Revision: rev,
				Version: fmt.Sprintf("1.%d", rev), Target: "web", Post: []string{fmt.Sprintf("true %d", rev)}}))
		}
		opts := Options{}
		if withFence {
			opts.Fence = fence.Check
		}
		in, err := New(f.root, f.state, f.store, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := in.Install(context.Background(), manifests[0], nil); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for i := range b.N {
			if err := in.InstallParts(context.Background(), filesInstallation(manifests[i+1]), nil); err != nil {
				b.Fatal(err)
			}
		}
		if withFence {
			fenced = time.Since(start)
		} else {
			plain = time.Since(start)
		}
	}
	b.ReportMetric(float64(fenced)/float64(plain), "x_unfenced")
}
