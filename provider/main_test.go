package provider_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/farthing-iot/farthing/internal/pgtest"
)

// cluster is the package's PostgreSQL, started once for all its tests.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	c, err := pgtest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "provider tests need PostgreSQL:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Stop()
	os.Exit(code)
}
