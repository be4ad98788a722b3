# idle.S: the memory-overhead benchmark guest (bench/, `make bench`).
#
# Prints "idle: ready" and then halts with interrupts off, forever: the VMM
# process stays alive with a booted guest that touches nothing more, so the
# host can read its resident memory (/proc/PID/smaps) and kill it. It never
# PASSes or FAILs on its own.

        .include "lib.inc"
        GUEST idle

        .text
        .code32
guest_main:
        PUTS "idle: ready\n"
1:      cli
        hlt
        jmp 1b
