/*
 * mcu.c: what the Cortex-M3 builds (make mcu) add to the programs.
 *
 * - The stack reservation: picolibc's linker script reads __stack_size before a command
 *   line --defsym could set it, so it is set here; the link then fails when the static
 *   buffers and the stack do not fit the RAM.
 * - An instruction counter: under QEMU with -icount shift=0 one instruction takes 1 ns of
 *   virtual time, and SysTick, clocked by the 25 MHz CPU clock of the mps2-an385 board,
 *   ticks every 40 instructions. On a real board the same count gives CPU cycles / 1.
 */
#include "mcu.h"

__asm__(".globl __stack_size\n.set __stack_size, 0x10000");

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_RELOAD 0xFFFFFFu

static volatile uint32_t systick_wraps;

/* Overrides picolibc's weak SysTick vector: counts the 24-bit counter's wraps. */
void arm_systick_isr(void)
{
    systick_wraps++;
}

void mcu_ticks_start(void)
{
    SYST_CSR = 0;
    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 7; /* enable, interrupt on wrap, CPU clock */
    while (SYST_CVR == 0) {
    }
    systick_wraps = 0;
}

uint64_t mcu_ticks(void)
{
    uint32_t wraps, value;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return (uint64_t)wraps * (SYST_RELOAD + 1u) + (SYST_RELOAD - value);
}
