/*
 * hotcold.c — gcc's hot/cold splitting, the shape that crashed hosts (issue 11, defect 1).
 *
 * At -O2 and -O3, with or without -fcf-protection, gcc 12 moves the unlikely branch of this
 * retry loop into `retry.cold`, which calls the cold helper and ends with `jmp retry+3`
 * (`retry+7` after an endbr64): a branch into the bytes a patch at retry's entry overwrites.
 * The helpers live in hotcold_helpers.c so that nothing is inlined. Built by
 * build_shapes.sh with gcc itself, whatever compiler builds the project; check_shapes.sh
 * verifies the shape with objdump.
 */
extern int try_once(int x);
extern void report_retry(int x) __attribute__((cold));

int retry(int x)
{
    for (;;) {
        int r = try_once(x);
        if (__builtin_expect(r >= 0, 1))
            return r;
        report_retry(x);
    }
}

/* A replacement in the same object (near: a direct jump would be used). */
int retry_repl(int x)
{
    return x + 1000;
}
