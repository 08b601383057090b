#!/bin/sh
# A kernel WARN from LKDTM, while the test itself passes.
echo "TAP version 13"
echo "1..1"
echo WARNING >/sys/kernel/debug/provoke-crash/DIRECT || exit 2
echo "ok 1 passes, but the kernel warned"
