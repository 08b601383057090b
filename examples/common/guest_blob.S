/* SPDX-License-Identifier: GPL-2.0-only */
/* The guest program (guest.c, linked by guest.ld) inside the VMM binary. */
	.section .rodata
	.balign 16
	.globl guest_bin_start, guest_bin_end
guest_bin_start:
	.incbin GUEST_BIN
guest_bin_end:
	.section .note.GNU-stack, "", @progbits
