// Package acpi builds the ACPI tables a kvmm guest boots with (RSDP, XSDT,
// FADT, FACS, DSDT, MADT, MCFG), holds the small AML encoder the DSDT is
// written with, and models the ACPI PM register block (PM1 event/control, PM
// timer, GPE0, reset register) that the guest's ACPI core drives for power
// button events, S3 and S5.
//
// What to do on a sleep request is not decided here: the PM block reports it
// through devices.PowerEvents and an optional suspend hook, and the vmm
// package owns the VM state machine.
package acpi
