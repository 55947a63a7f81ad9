/*
 * globals_lib.c — libglobals_lib.so for globals_host: an exported variable the program uses
 * and a static whose name the program also has (see globals_host.c).
 */
__attribute__((used)) static int dup_name = 2;
int lib_exported = 5;

int lib_dup_value(void)
{
    return *(volatile int *)&dup_name;
}
