/* versioned.c — a library that defines one name twice, as symbol versions do in glibc
 * (pthread_kill@GLIBC_2.2.5 and pthread_kill@@GLIBC_2.34): vfunc@HP_1 and vfunc@@HP_2.
 * Built with versioned.map; used by test_symbols.c. */
__attribute__((noinline, used)) int vfunc_v1(int x)
{
    return x + 1;
}

__attribute__((noinline, used)) int vfunc_v2(int x)
{
    return x + 2;
}

__asm__(".symver vfunc_v1, vfunc@HP_1\n.symver vfunc_v2, vfunc@@HP_2\n");
