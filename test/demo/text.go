package main

import (
	"os"
	"strings"
)

func join(args []string) string { return strings.Join(args, " ") }

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
