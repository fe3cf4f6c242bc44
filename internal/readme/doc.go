// Package readme holds the test that keeps the README working: it runs
// the README's shell blocks in order, as a newcomer pasting them would,
// in a copy of the tree, and checks what they print.
//
// A ```sh block runs unless the line before it is an HTML comment that
// starts with "README test: not run" and says why (it installs a
// package, needs systemd, is the test command itself, or loads the
// machine for minutes). Blocks of other languages (yaml, text) are not
// run.
package readme
