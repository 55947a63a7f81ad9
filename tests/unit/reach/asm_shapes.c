/*
 * asm_shapes.c — code that enters a function's first bytes from elsewhere, as hand-written
 * assembly does, and tiny functions that must stay refused. Each `*_target` is an ordinary
 * function whose own code never branches into its first five bytes, so decoding it alone
 * (the old check) accepts it; another routine, a table, a pointer or a symbol reaches inside:
 *
 *   entry2_target   a second global entry point `entry2_inner` at +2
 *   label_target    a local label `label_inner` (.symtab only, STT_NOTYPE) at +2
 *   mulx_target     OpenSSL's bn_mulx4x_mont shape: `mul_mont_like` jumps to +3
 *   call_target     another routine calls +3
 *   table_target    a jump table of `table_dispatch` (32-bit offsets in .rodata) has +2
 *   table2_target   the same, with a local label symbol between the table's lea and the jmp
 *   lea_target      `lea_taker` computes the address +2 (a computed goto's label)
 *   pointer_target  a code pointer in .data.rel.ro to +1 (a RELATIVE relocation)
 *   tiny_nopad      3 bytes, followed at once by the next function
 *   tiny_jumped     4 bytes, then padding that `pad_jumper` jumps into
 *   tiny_notpad     4 bytes, then code that is not padding
 *   tiny_falls      3 bytes whose last instruction falls through
 * All return small integers and are never called with a patch on them.
 */
__asm__(
    ".text\n"
    ".globl entry2_target, entry2_inner\n"
    ".type entry2_target,@function\n"
    "entry2_target:\n"
    "  mov %edi,%eax\n"                    /* 2 bytes */
    "entry2_inner:\n"
    "  add $1,%eax\n  add $1,%eax\n  ret\n"
    ".size entry2_target,.-entry2_target\n"

    ".globl label_target\n"
    ".type label_target,@function\n"
    "label_target:\n"
    "  mov %edi,%eax\n"
    "label_inner:\n"                       /* a local symbol, kept in .symtab */
    "  add $2,%eax\n  add $2,%eax\n  ret\n"
    ".size label_target,.-label_target\n"

    ".globl mulx_target, mul_mont_like\n"
    ".type mulx_target,@function\n"
    "mulx_target:\n"
    "  mov %rsp,%rax\n"                    /* 3 bytes, as in bn_mulx4x_mont */
    ".Lmulx_enter:\n"
    "  push %rbx\n  mov %edi,%eax\n  pop %rbx\n  ret\n"
    ".size mulx_target,.-mulx_target\n"
    ".type mul_mont_like,@function\n"
    "mul_mont_like:\n"
    "  test %edi,%edi\n  jnz 1f\n  mov %rsp,%rax\n  jmp .Lmulx_enter\n"
    "1: mov $7,%eax\n  ret\n"
    ".size mul_mont_like,.-mul_mont_like\n"

    ".globl call_target, call_maker\n"
    ".type call_target,@function\n"
    "call_target:\n"
    "  mov %rsp,%rax\n"
    ".Lcall_inner:\n"
    "  mov %edi,%eax\n  add $3,%eax\n  ret\n"
    ".size call_target,.-call_target\n"
    ".type call_maker,@function\n"
    "call_maker:\n"
    "  call .Lcall_inner\n  ret\n"
    ".size call_maker,.-call_maker\n"

    ".globl table_target, table_dispatch\n"
    ".type table_target,@function\n"
    "table_target:\n"
    "  mov %edi,%eax\n"
    ".Ltable_inner:\n"
    "  add $4,%eax\n  add $4,%eax\n  ret\n"
    ".size table_target,.-table_target\n"
    ".type table_dispatch,@function\n"
    "table_dispatch:\n"
    "  and $1,%edi\n"
    "  lea .Ltable(%rip),%rdx\n"
    "  movslq (%rdx,%rdi,4),%rax\n"
    "  add %rdx,%rax\n"
    "  jmp *%rax\n"
    ".Ltable_case0:\n  mov $5,%eax\n  ret\n"
    ".size table_dispatch,.-table_dispatch\n"
    ".section .rodata\n"
    ".p2align 2\n"
    ".Ltable:\n"
    "  .long .Ltable_case0-.Ltable\n"
    "  .long .Ltable_inner-.Ltable\n"
    ".Ltable_after:\n"
    "  .asciz \"after the table\"\n"
    ".text\n"

    ".globl table2_target, table2_dispatch\n"
    ".type table2_target,@function\n"
    "table2_target:\n"
    "  mov %edi,%eax\n"
    ".Ltable2_inner:\n"
    "  add $8,%eax\n  add $8,%eax\n  ret\n"
    ".size table2_target,.-table2_target\n"
    ".type table2_dispatch,@function\n"
    "table2_dispatch:\n"
    "  and $1,%edi\n"
    "  lea .Ltable2(%rip),%rdx\n"
    "table2_middle:\n"                     /* a local symbol: the sweep restarts here */
    "  movslq (%rdx,%rdi,4),%rax\n"
    "  add %rdx,%rax\n"
    "  jmp *%rax\n"
    ".Ltable2_case0:\n  mov $9,%eax\n  ret\n"
    ".size table2_dispatch,.-table2_dispatch\n"
    ".section .rodata\n"
    ".p2align 2\n"
    ".Ltable2:\n"
    "  .long .Ltable2_case0-.Ltable2\n"
    "  .long .Ltable2_inner-.Ltable2\n"
    ".text\n"

    ".globl lea_target, lea_taker\n"
    ".type lea_target,@function\n"
    "lea_target:\n"
    "  mov %edi,%eax\n"
    ".Llea_inner:\n"
    "  add $6,%eax\n  add $6,%eax\n  ret\n"
    ".size lea_target,.-lea_target\n"
    ".type lea_taker,@function\n"
    "lea_taker:\n"
    "  lea .Llea_inner(%rip),%rax\n  lea .Ltable_after(%rip),%rdx\n  ret\n"
    ".size lea_taker,.-lea_taker\n"

    ".globl pointer_target\n"
    ".type pointer_target,@function\n"
    "pointer_target:\n"
    "  nop\n"
    ".Lpointer_inner:\n"
    "  mov %edi,%eax\n  add $7,%eax\n  add $7,%eax\n  ret\n"
    ".size pointer_target,.-pointer_target\n"
    ".section .data.rel.ro,\"aw\"\n"
    ".p2align 3\n"
    ".globl pointer_table\n"
    "pointer_table:\n"
    "  .quad .Lpointer_inner\n"
    ".text\n"

    ".p2align 4\n"
    ".globl tiny_nopad, tiny_next\n"
    ".type tiny_nopad,@function\n"
    "tiny_nopad:\n"
    "  lea (%rdi,%rdi),%eax\n  ret\n"
    ".size tiny_nopad,.-tiny_nopad\n"
    ".type tiny_next,@function\n"
    "tiny_next:\n"
    "  mov %edi,%eax\n  ret\n"
    ".size tiny_next,.-tiny_next\n"

    ".p2align 4\n"
    ".globl tiny_jumped, pad_jumper\n"
    ".type tiny_jumped,@function\n"
    "tiny_jumped:\n"
    "  lea (%rdi,%rdi,2),%eax\n  ret\n"
    ".size tiny_jumped,.-tiny_jumped\n"
    ".Ltiny_pad:\n"                        /* +4: the jump's fifth byte */
    "  nop\n  nop\n  nop\n  nop\n  nop\n  nop\n  nop\n  nop\n  nop\n"
    ".p2align 4\n"
    ".type pad_jumper,@function\n"
    "pad_jumper:\n"
    "  jmp .Ltiny_pad\n"
    ".size pad_jumper,.-pad_jumper\n"

    ".p2align 4\n"
    ".globl tiny_notpad\n"
    ".type tiny_notpad,@function\n"
    "tiny_notpad:\n"
    "  lea (%rdi,%rdi,4),%eax\n  ret\n"
    ".size tiny_notpad,.-tiny_notpad\n"
    "  mov %rdi,%rax\n  ret\n"

    ".p2align 4\n"
    ".globl tiny_falls\n"
    ".type tiny_falls,@function\n"
    "tiny_falls:\n"
    "  lea (%rdi,%rdi),%eax\n"
    ".size tiny_falls,.-tiny_falls\n"
    "  nop\n  nop\n  nop\n  nop\n  nop\n  nop\n  ret\n"
    ".p2align 4\n");
