package console

import (
	"html/template"
	"net/url"
	"strconv"
	"strings"
)

// rowsHTML writes the rows of a table of nodes. It is the one piece of
// HTML not made by html/template: a tree of 10,000 nodes would take a
// third of a second there (an escaper call per field), and takes a few
// milliseconds here. Every value goes through esc (text and quoted
// attributes) or nodeHref; the tests feed it hostile names.
func rowsHTML(rows []row) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * 400)
	for i := range rows {
		writeRow(&b, &rows[i])
	}
	return template.HTML(b.String())
}

// esc escapes s for HTML text and for an attribute value in double
// quotes.
func esc(b *strings.Builder, s string) {
	b.WriteString(template.HTMLEscapeString(s))
}

// nodeHref is the link to a node's page: its name is one escaped path
// segment, whatever it holds.
func nodeHref(name string) string {
	return "/nodes/" + url.PathEscape(name)
}

func writeRow(b *strings.Builder, r *row) {
	if c := r.Collapsed; c != nil {
		b.WriteString(`<tr class="collapsed" data-collapsed="`)
		esc(b, c.Parent)
		b.WriteString(`" data-count="`)
		b.WriteString(strconv.Itoa(c.Count))
		b.WriteString(`"><td class="name"><span class="branch">`)
		esc(b, r.Prefix)
		b.WriteString(`</span>`)
		b.WriteString(strconv.Itoa(c.Count))
		b.WriteString(` subscribers</td><td colspan="5">`)
		for _, s := range c.States {
			b.WriteString(`<span class="rev s-`)
			esc(b, s.Key)
			b.WriteString(`">`)
			b.WriteString(strconv.Itoa(s.Count))
			b.WriteByte(' ')
			esc(b, label(s.Key))
			b.WriteString(`</span> `)
		}
		b.WriteString(`<a href="`)
		esc(b, nodeHref(c.Parent))
		b.WriteString(`#children">show all</a></td></tr>` + "\n")
		return
	}
	n := r.Node
	b.WriteString(`<tr data-node="`)
	esc(b, n.Name)
	b.WriteString(`" data-role="`)
	esc(b, n.Role)
	b.WriteString(`" data-state="`)
	esc(b, r.State)
	b.WriteString(`" data-connected="`)
	b.WriteString(strconv.FormatBool(n.Connected))
	b.WriteString(`" data-stale="`)
	b.WriteString(strconv.FormatBool(n.Stale))
	b.WriteString(`"`)
	if n.Stale {
		b.WriteString(` class="stale"`)
	} else if !n.Connected {
		b.WriteString(` class="away"`)
	}
	b.WriteString(`><td class="name"><span class="branch">`)
	esc(b, r.Prefix)
	b.WriteString(`</span><a href="`)
	esc(b, nodeHref(n.Name))
	b.WriteString(`">`)
	esc(b, n.Name)
	b.WriteString(`</a>`)
	if n.ActiveNode != "" && n.ActiveNode != n.Name {
		b.WriteString(` <span class="muted">(`)
		esc(b, n.ActiveNode)
		b.WriteString(`)</span>`)
	}
	b.WriteString(`</td><td>`)
	esc(b, n.Role)
	b.WriteString(`</td><td>`)
	if n.Agent == "" {
		b.WriteString("-")
	} else {
		esc(b, n.Agent)
	}
	b.WriteString(`</td><td`)
	if !n.Connected {
		b.WriteString(` title="last seen `)
		esc(b, when(n.LastSeen))
		b.WriteString(`"`)
	}
	b.WriteString(`>`)
	esc(b, r.Seen)
	if n.Stale {
		b.WriteString(` <span class="badge s-stale">stale</span>`)
	} else if !n.Connected {
		b.WriteString(` <span class="badge s-away">out of touch</span>`)
	}
	b.WriteString(`</td><td>`)
	for _, d := range n.Distributions {
		key := d.Name + "@" + strconv.FormatUint(d.Revision, 10)
		b.WriteString(`<span class="rev s-`)
		esc(b, d.State)
		b.WriteString(`" data-dist="`)
		esc(b, key)
		b.WriteString(`" data-state="`)
		esc(b, d.State)
		b.WriteString(`"`)
		if d.Reason != "" || d.Error != "" {
			b.WriteString(` title="`)
			esc(b, d.Reason+d.Error)
			b.WriteString(`"`)
		}
		b.WriteString(`>`)
		esc(b, key)
		b.WriteByte(' ')
		esc(b, label(d.State))
		if d.Chunks > 0 && d.State == "receiving" {
			b.WriteByte(' ')
			b.WriteString(strconv.Itoa(percent(d.HaveChunks, d.Chunks)))
			b.WriteByte('%')
		}
		b.WriteString(`</span> `)
	}
	b.WriteString(`</td><td class="problem">`)
	esc(b, n.Problem)
	b.WriteString("</td></tr>\n")
}
