/* mcu.h: the Cortex-M3 builds' SysTick counter (see mcu.c). */
#ifndef NITRO_MCU_H
#define NITRO_MCU_H

#include <stdint.h>

/* Instructions per SysTick tick under QEMU -icount shift=0 (1 ns each, 25 MHz SysTick). */
#define MCU_INSTRUCTIONS_PER_TICK 40u

void mcu_ticks_start(void);
uint64_t mcu_ticks(void);

#endif
