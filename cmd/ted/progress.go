package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// progress shows how far long work has come: a bar on a terminal, a plain
// line every few seconds otherwise (logs, CI, pipes).
type progress interface {
	// update reports the bytes done so far.
	update(done int64)
	// finish ends the display; done is the final count.
	finish(done int64)
}

// plainEvery is how often a plain progress line is printed.
const plainEvery = 5 * time.Second

// newProgress returns a bar when w is a terminal and a plain line printer
// otherwise.
func newProgress(w io.Writer, label string, total int64) progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p := mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
		bar := p.AddBar(total,
			mpb.PrependDecorators(decor.Name(label+" "), decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")),
			mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), " % .1f"), decor.Name(" "), decor.Percentage()),
		)
		return &barProgress{p: p, bar: bar}
	}
	return &plainProgress{w: w, label: label, total: total, last: time.Now()}
}

type barProgress struct {
	p   *mpb.Progress
	bar *mpb.Bar
}

func (b *barProgress) update(done int64) { b.bar.SetCurrent(done) }

func (b *barProgress) finish(done int64) {
	b.bar.SetCurrent(done)
	b.bar.SetTotal(-1, true) // complete at whatever was done
	b.p.Wait()
}

type plainProgress struct {
	w     io.Writer
	label string
	total int64
	last  time.Time
	start time.Time
}

func (p *plainProgress) update(done int64) {
	if p.start.IsZero() {
		p.start = p.last
	}
	if time.Since(p.last) < plainEvery {
		return
	}
	p.last = time.Now()
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	rate := float64(done) / time.Since(p.start).Seconds()
	fmt.Fprintf(p.w, "%s: %s of %s (%.0f%%), %s/s\n", p.label, humanBytes(done), humanBytes(p.total), pct, humanBytes(int64(rate)))
}

func (p *plainProgress) finish(int64) {}

// humanBytes formats a byte count for people (1.5 MiB).
func humanBytes(n int64) string {
	return humanize.IBytes(uint64(max(n, 0)))
}
