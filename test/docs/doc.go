// Package docs holds the tests that keep README.md and docs/ true to the
// code (issue 26): links and anchors resolve; the reference pages
// (docs/reference/flags.md, metrics.md, events.md, conditions.md) list
// exactly the flags, metrics, Event reasons and condition reasons the code
// defines; docs/design.md lists exactly the module's packages, and every
// type, function and method it names exists; statements
// found stale once do not come back. The code side is read with go/ast
// (and, for flags that come from libraries, by calling those libraries),
// never from a copy kept here.
package docs
