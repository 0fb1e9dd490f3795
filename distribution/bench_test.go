package distribution_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ted/distribution"
	"ted/store"
)

// benchBytes is the size of the incompressible input: 1 GiB as the budget
// says, or TED_BENCH_BYTES for a quicker look.
func benchBytes(b *testing.B) int64 {
	if s := os.Getenv("TED_BENCH_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("TED_BENCH_BYTES=%q: %v", s, err)
		}
		return n
	}
	return 1 << 30
}

// incompressibleTree writes one file of random bytes into a fresh directory.
func incompressibleTree(b *testing.B, n int64) string {
	b.Helper()
	dir := b.TempDir()
	f, err := os.Create(filepath.Join(dir, "random.bin"))
	if err != nil {
		b.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(f, r, n); err != nil {
		b.Fatal(err)
	}
	// A source tree is on disk before a build starts: without the sync,
	// a GiB of dirty pages would make the kernel charge its writeback to
	// whatever writes next, the build being measured.
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return dir
}

func benchOptions() distribution.BuildOptions {
	return distribution.BuildOptions{Name: "bench", Revision: 1, Version: "1.0.0", Channels: []string{"bench"}}
}

// buildInto builds src into a new store, timing only the build (closing
// the store, which flushes and syncs, included), and removes the store
// afterwards. It returns the CPU time of the timed part.
func buildInto(b *testing.B, src string) (distribution.BuildStats, time.Duration) {
	b.Helper()
	b.StopTimer()
	dir, err := os.MkdirTemp("", "ted-bench-store-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(dir, store.Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	cpu := processCPU()
	_, stats, err := distribution.BuildDir(context.Background(), src, benchOptions(), st)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	cpu = processCPU() - cpu
	b.StopTimer()
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	return stats, cpu
}

// BenchmarkBuildIncompressible is the build budget: chunk, hash, try to
// compress and store 1 GiB of random bytes. Run with -cpu 1 for the
// one-core figure; BenchmarkReadHash is its reference.
//
// One untimed build comes first: on a VM, the first touch of guest memory
// the page cache has never used costs several times what the build itself
// does (measured here: 2.7 s of CPU to write a first GiB to a file, 0.25 s
// for the next), a cost a long-running node pays once.
func BenchmarkBuildIncompressible(b *testing.B) {
	n := benchBytes(b)
	src := incompressibleTree(b, n)
	buildInto(b, src)
	b.SetBytes(n)
	b.ResetTimer()
	var cpu time.Duration
	for b.Loop() {
		_, c := buildInto(b, src)
		cpu += c
	}
	reportCPU(b, n, cpu)
}

// processCPU returns the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports throughput per CPU-second: the "on one core" figure,
// which wall time hides when the disk, not the processor, is the limit.
func reportCPU(b *testing.B, perOp int64, cpu time.Duration) {
	if cpu > 0 {
		b.ReportMetric(float64(perOp)*float64(b.N)/cpu.Seconds()/1e6, "MB/cpu-s")
	}
}

// BenchmarkReadHash is the floor under any build: read the same file and
// SHA-256 it, in the same run.
func BenchmarkReadHash(b *testing.B) {
	n := benchBytes(b)
	src := incompressibleTree(b, n)
	b.SetBytes(n)
	buf := make([]byte, 1<<20)
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(filepath.Join(src, "random.bin"))
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.CopyBuffer(h, f, buf); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkBuildGoroot builds a real tree: the Go installation (about
// 15,000 files of source, text and binaries).
func BenchmarkBuildGoroot(b *testing.B) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Skip("go env GOROOT:", err)
	}
	src := strings.TrimSpace(string(out))
	var stats distribution.BuildStats
	for b.Loop() {
		stats, _ = buildInto(b, src)
	}
	b.SetBytes(stats.Bytes)
	b.ReportMetric(float64(stats.Files), "files")
	b.ReportMetric(float64(stats.NewBytes)/float64(stats.Bytes)*100, "stored-%")
}

// BenchmarkChunkSizes measures, for each candidate average chunk size, what
// a real upgrade costs: the share of the new release's bytes in chunks the
// old release does not have (what travels), and the chunk references a
// manifest carries. TED_CHUNK_PAIR=OLD:NEW names the two files or trees (see
// bench/chunksize.sh); without it the benchmark is skipped.
func BenchmarkChunkSizes(b *testing.B) {
	pair := os.Getenv("TED_CHUNK_PAIR")
	oldPath, newPath, ok := strings.Cut(pair, ":")
	if !ok {
		b.Skip("set TED_CHUNK_PAIR=OLD:NEW (bench/chunksize.sh does)")
	}
	oldData, newData := readPairSide(b, oldPath), readPairSide(b, newPath)
	newBytes := 0
	for _, f := range newData {
		newBytes += len(f)
	}
	for _, avg := range []int{8 << 10, 16 << 10, 24 << 10, 32 << 10, 48 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("avg=%dKiB", avg>>10), func(b *testing.B) {
			var fresh, refs int
			var took time.Duration
			for b.Loop() {
				start := time.Now()
				known := make(map[distribution.ChunkID]bool)
				for _, f := range oldData {
					for _, c := range distribution.ChunkWithAverage(bytes.NewReader(f), avg) {
						known[distribution.SumChunk(c)] = true
					}
				}
				fresh, refs = 0, 0
				for _, f := range newData {
					for _, c := range distribution.ChunkWithAverage(bytes.NewReader(f), avg) {
						refs++
						if !known[distribution.SumChunk(c)] {
							fresh += len(c)
						}
					}
				}
				took = time.Since(start)
			}
			// What travels: new chunks, plus 36 bytes of manifest per
			// chunk reference (id and size).
			wire := fresh + 36*refs
			b.ReportMetric(100*float64(fresh)/float64(newBytes), "new-%")
			b.ReportMetric(100*float64(wire)/float64(newBytes), "wire-%")
			b.ReportMetric(float64(refs), "chunks")
			b.ReportMetric(float64(newBytes)/took.Seconds()/1e6*2, "MB/s")
		})
	}
}

// readPairSide reads one side of an upgrade pair: a file, or every regular
// file of a tree (each chunked on its own, as a build does).
func readPairSide(b *testing.B, path string) [][]byte {
	b.Helper()
	var files [][]byte
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		files = append(files, data)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return files
}

// discardSink takes every chunk and keeps none: the build without storage,
// to split the budget between building and storing.
type discardSink struct{}

func (discardSink) HasChunk(distribution.ChunkID) (bool, error) { return false, nil }
func (discardSink) PutChunk(distribution.ChunkID, []byte) error { return nil }

// BenchmarkBuildNoStore is BenchmarkBuildIncompressible without the store.
func BenchmarkBuildNoStore(b *testing.B) {
	n := benchBytes(b)
	src := incompressibleTree(b, n)
	b.SetBytes(n)
	b.ResetTimer()
	cpu := processCPU()
	for b.Loop() {
		if _, _, err := distribution.BuildDir(context.Background(), src, benchOptions(), discardSink{}); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, n, processCPU()-cpu)
}
