module github.com/farthing-iot/farthing

go 1.26.8

require (
	github.com/fxamacker/cbor/v2 v2.9.6
	github.com/veraison/go-cose v1.3.0
	go.etcd.io/bbolt v1.5.0
	go.yaml.in/yaml/v3 v3.0.6
)

require (
	github.com/x448/float16 v0.8.4 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
