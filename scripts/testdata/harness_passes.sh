#!/bin/sh
echo "TAP version 13"
echo "1..1"
echo "ok 1 passes"
