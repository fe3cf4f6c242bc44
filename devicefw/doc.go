// Package devicefw is Farthing's firmware client: it turns meter readings
// into signed tickets, keeps the sequence counter, holds the tickets the
// gateway has not acknowledged and checks the receipts that come back.
//
// It is written for microcontrollers and compiles with TinyGo: it imports
// only package protocol and the standard library, uses no reflection, no
// maps, no goroutines and no package net, and allocates nothing per ticket
// once a Client exists. Transports are the firmware's business (or, on
// Linux-class devices, of the adapter sub-packages, which TinyGo never
// compiles): a Client produces bytes to send and consumes bytes received.
//
// The life of a ticket:
//
//	c, _ := devicefw.New(cfg)                       // once, at boot
//	msg, seq, err := c.Report(nowMs, readings)      // sign and keep; send msg
//	r, err := c.HandleReceipt(received)             // check, match, free
//	for seq, msg, ok := c.NextPending(0); ok; ... // after a reconnect: send again
//
// Readings are cumulative registers, so a newer ticket carries everything an
// older one did for the same meters: when a ticket is kept, every older
// pending ticket whose meters are all covered by newer ones is dropped, and
// a device short of RAM loses no usage, only the time resolution of the
// tickets it dropped.
//
// A device without a real-time clock sets Config.Uptime (milliseconds
// since it booted) and dates its tickets with Now. Every receipt carries
// the gateway's clock inside its MAC; the client takes the offset from
// each one, so from the first receipt on Now is the gateway's time. The
// very first ticket, dated by uptime alone, is refused clock_skew and
// charged nothing — its receipt teaches the time, and the next ticket's
// cumulative registers carry its usage. A device that can never keep a
// time is registered `clock: gateway`: the gateway dates each of its
// tickets on arrival.
package devicefw
