;;; sched-mode-tests.el --- ERT tests for sched-mode -*- lexical-binding: t; -*-

;; emacs -Q --batch -L editors/emacs -l sched-mode-tests.el -f ert-run-tests-batch-and-exit

;;; Code:

(require 'ert)
(require 'compile)
(require 'sched-mode)

(defconst sched-test-sample
  "optimizer adamw(weight_decay=1e-4)  # comment
model \"m.py:build\"
let warm = 5%
phase tail 10 lr warmup_cosine(0 -> 1 -> 0, warm) <
free model.lr, layers[0].weight;
init gp.c ~ normal(0, 0.1);
stop when loss_change < 1e-6 over 50
>
phase 5 lr 0.1 * plateau(on=val.loss) < free a >
params <
in, after: fixed in 0, tail | init uniform(0, 1) at 0;
>
")

(defmacro sched-test-with-buffer (text &rest body)
  "Run BODY in a `sched-mode' buffer holding TEXT, fontified."
  (declare (indent 1))
  `(with-temp-buffer
     (insert ,text)
     (sched-mode)
     (font-lock-ensure)
     (goto-char (point-min))
     ,@body))

(defun sched-test-face (needle &optional nth)
  "The face at the NTH (0-based) occurrence of NEEDLE in the buffer."
  (goto-char (point-min))
  (dotimes (_ (1+ (or nth 0)))
    (search-forward needle))
  (let ((face (get-text-property (match-beginning 0) 'face)))
    (if (listp face) (car face) face)))

(ert-deftest sched-mode-is-chosen-for-sched-files ()
  (should (eq (assoc-default "fit.sched" auto-mode-alist #'string-match) 'sched-mode)))

(ert-deftest sched-mode-highlighting ()
  (sched-test-with-buffer sched-test-sample
    (should (eq (sched-test-face "optimizer") 'font-lock-keyword-face))
    (should (eq (sched-test-face "adamw") 'font-lock-type-face))
    (should (eq (sched-test-face "weight_decay") 'font-lock-variable-name-face))
    (should (eq (sched-test-face "# comment") 'font-lock-comment-delimiter-face))
    (should (eq (sched-test-face "m.py") 'font-lock-string-face))
    (should (eq (sched-test-face "5%") 'font-lock-constant-face))
    (should (eq (sched-test-face "phase") 'font-lock-keyword-face))
    (should (eq (sched-test-face "tail") 'font-lock-function-name-face))
    (should (eq (sched-test-face "warmup_cosine") 'font-lock-builtin-face))
    ;; a parameter named like a keyword is a pattern, not a keyword
    (should (eq (sched-test-face "model" 1) 'font-lock-variable-name-face))
    (should (eq (sched-test-face "lr" 1) 'font-lock-variable-name-face))
    (should (eq (sched-test-face "layers[0]") 'font-lock-variable-name-face))
    (should (eq (sched-test-face "normal") 'font-lock-builtin-face))
    (should (eq (sched-test-face "loss_change") 'font-lock-constant-face))
    (should (eq (sched-test-face "val.loss") 'font-lock-constant-face))
    ;; params specs: `fixed in 0' and `init uniform(...)' are not patterns
    (should (eq (sched-test-face "fixed") 'font-lock-keyword-face))
    (should (eq (sched-test-face "in 0") 'font-lock-keyword-face))
    (should (eq (sched-test-face "uniform") 'font-lock-builtin-face))))

(ert-deftest sched-mode-highlights-an-evaluation-s-unit-with-its-count-left-out ()
  (sched-test-with-buffer "eval \"m.py:metrics\" every step\nphase 10 lr step(0.1, at=[5]) < free a >\n"
    (should (eq (sched-test-face "every") 'font-lock-keyword-face))
    (should (eq (sched-test-face "step\n") 'font-lock-keyword-face))
    (should (eq (sched-test-face "step(") 'font-lock-builtin-face))))

(ert-deftest sched-mode-brackets-ignore-arrows-and-comparisons ()
  (sched-test-with-buffer "phase 1 lr linear(0 -> 1) < stop when loss < 1 > # end"
    (search-forward "< stop")
    (goto-char (match-beginning 0))
    (forward-sexp)
    (should (looking-at " # end"))))

(ert-deftest sched-mode-indentation ()
  (sched-test-with-buffer "repeat 2 <\nphase 10 lr 0.1 <\nfree a;\ninit b = normal(0,\n1);\n>\n>\n"
    (indent-region (point-min) (point-max))
    (should (equal (buffer-string)
                   "repeat 2 <\n  phase 10 lr 0.1 <\n    free a;\n    init b = normal(0,\n      1);\n  >\n>\n"))))

(ert-deftest sched-mode-comments ()
  (sched-test-with-buffer "phase 1 lr 0.1 <>\n"
    (should (equal comment-start "# "))
    (comment-region (point-min) (line-end-position))
    (should (equal (buffer-string) "# phase 1 lr 0.1 <>\n"))))

(ert-deftest sched-mode-compile-understands-concise-output ()
  (with-temp-buffer
    (insert "fit.sched:3:25: error[E0002]: unexpected character `@`\n"
            "fit.sched:2:5: warning[W0101]: `unused` is never used\n"
            "Found 1 error and 1 warning in 1 file.\n")
    (let ((rule (cdr (assq 'schedc compilation-error-regexp-alist-alist))))
      (goto-char (point-min))
      (should (looking-at (car rule)))
      (should (equal (match-string 1) "fit.sched"))
      (should (equal (match-string 2) "3"))
      (should (equal (match-string 3) "25"))
      (should-not (match-beginning 4))  ; an error
      (forward-line)
      (should (looking-at (car rule)))
      (should (match-beginning 4))      ; a warning
      (forward-line)
      (should-not (looking-at (car rule))))
    (should (memq 'schedc compilation-error-regexp-alist))))

(ert-deftest sched-mode-compile-command ()
  (with-temp-buffer
    (setq buffer-file-name "/tmp/fit.sched")
    (sched-mode)
    (should (equal compile-command "schedc check --format concise fit.sched"))))

(ert-deftest sched-mode-registers-with-eglot ()
  ;; eglot is built in from Emacs 29: simulate its loading to run the registration.
  (defvar eglot-server-programs nil)
  (unless (featurep 'eglot) (provide 'eglot))
  (should (equal (assq 'sched-mode eglot-server-programs) '(sched-mode "schedc" "lsp"))))

(provide 'sched-mode-tests)
;;; sched-mode-tests.el ends here
