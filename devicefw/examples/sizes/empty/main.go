// Command empty is the program that firmware sizes are measured against:
// what TinyGo's runtime costs on its own.
package main

func main() {}
