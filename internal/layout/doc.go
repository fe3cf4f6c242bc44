// Package layout holds no code: its test is the dependency rules of the
// whole tree (who may import whom), checked against `go list`, so that an
// import that runs the wrong way fails the build's tests, not a review.
package layout
