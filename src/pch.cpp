int kiln_pch_anchor = 0;
