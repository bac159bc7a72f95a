/* Added by compiler/native.py's build() to every program of kernels it compiles, and run once
   before the library is used: 1 when this build still tells a nan and an inf from a number.
   Flags such as -ffast-math let the compiler assume it never meets one and drop the checks
   that send such a call, and so every domain error, to numpy: such a build is not used. */
int chainrule_self_test(void) {
    volatile double not_a_number = NAN, infinite = INFINITY, minus_one = -1.0;
    double v[9] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0};
    int works = all_finite(v, 0, 9);
    v[1] = not_a_number; /* in all_finite's vector loop */
    works &= !all_finite(v, 0, 9) && isnan(v[1]);
    v[1] = 1.0, v[8] = -infinite; /* in its scalar tail */
    works &= !all_finite(v, 0, 9) && isinf(v[8]);
    v[8] = log(minus_one);
    works &= !all_finite(v, 0, 9);
    return works;
}
