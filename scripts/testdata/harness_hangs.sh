#!/bin/sh
echo "TAP version 13"
echo "1..1"
sleep 60
echo "ok 1 never printed"
