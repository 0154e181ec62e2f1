package status

import (
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Escape returns untrusted text as a table shows it. Text of printable
// characters (strconv.IsPrint: letters, marks, numbers, punctuation,
// symbols and the ASCII space) is shown as it is; anything else (control
// characters, terminal escape sequences, tabs and newlines that would
// break the columns, bidirectional overrides, invalid UTF-8) is shown
// quoted, as strconv.Quote writes it: "\x1b[2J" reaches the terminal as
// the seven visible characters \x1b[2J inside quotes. What Escape returns
// is printable, so Escape(Escape(s)) == Escape(s).
func Escape(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// row writes one table row: each cell escaped (Escape), separated by
// tabs. Every table of WriteTable writes its rows with it.
func row(w io.Writer, cells ...string) {
	escaped := make([]string, len(cells))
	for i, c := range cells {
		escaped[i] = Escape(c)
	}
	_, _ = io.WriteString(w, strings.Join(escaped, "\t")+"\n")
}
