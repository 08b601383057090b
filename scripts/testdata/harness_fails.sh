#!/bin/sh
echo "TAP version 13"
echo "1..2"
echo "ok 1 passes"
echo "not ok 2 fails"
exit 1
